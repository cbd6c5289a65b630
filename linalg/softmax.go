package linalg

import "math"

// Softmax2 replaces the concatenation of a and b by its softmax, a row split
// in two parts (the two branches of a bi-branch attention row): with m the
// largest value (NaNs skipped), x ← exp(x − m)/(Σa + Σb), each part summed
// in order by ExpShift. The cgo build vectorises it, bit for bit the same.
func Softmax2(a, b []float32) {
	if len(a)+len(b) >= minVecExp {
		softmax2Vec(a, b)
		return
	}
	softmax2Go(a, b)
}

func softmax2Go(a, b []float32) {
	m := float32(math.Inf(-1))
	for _, v := range a {
		if v > m {
			m = v
		}
	}
	for _, v := range b {
		if v > m {
			m = v
		}
	}
	inv := 1 / (ExpShift(a, m) + ExpShift(b, m))
	for i := range a {
		a[i] *= inv
	}
	for i := range b {
		b[i] *= inv
	}
}

// ScaleDiff sets s[i] = p[i]·(s[i] − d) (len(p) ≥ len(s)): the softmax
// backward of one row. The cgo build vectorises it, bit for bit the same.
func ScaleDiff(s, p []float32, d float32) {
	if len(s) >= minVecExp {
		scaleDiffVec(s, p, d)
		return
	}
	scaleDiffGo(s, p, d)
}

func scaleDiffGo(s, p []float32, d float32) {
	p = p[:len(s)]
	for i, pv := range p {
		s[i] = pv * (s[i] - d)
	}
}
