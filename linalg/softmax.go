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

func softmax2Go(a, b []float32) { softmax2With(a, b, ExpShift) }

// softmax2With is the softmax of the concatenation of a and b, each part's
// exponentials and sum computed by expSum; it returns the shift m and 1/Σ.
func softmax2With(a, b []float32, expSum func([]float32, float32) float32) (m, inv float32) {
	m, inv = expSums(a, b, expSum)
	for i := range a {
		a[i] *= inv
	}
	for i := range b {
		b[i] *= inv
	}
	return m, inv
}

// Softmax2Lanes is Softmax2 with each part summed in 16 interleaved
// partial sums (expShiftLanes) rather than in order: one vectorised pass
// computes the exponentials and their sum, where the in-order sum of
// Softmax2 is a chain of dependent additions. Package attn uses it for
// wide layers, whose rows are long. It returns the shift m (the largest
// value) and inv = 1/Σ, from which ExpScale recomputes the row. The cgo
// build vectorises it, bit for bit the same.
func Softmax2Lanes(a, b []float32) (m, inv float32) {
	if len(a)+len(b) >= minVecExp {
		return softmax2LanesVec(a, b)
	}
	return softmax2LanesGo(a, b)
}

func softmax2LanesGo(a, b []float32) (m, inv float32) { return softmax2With(a, b, expShiftLanes) }

// ExpScale sets x[i] = exp(x[i] − m)·inv with the operations of
// Softmax2Lanes: given the m and inv it returned for a row, the same bits
// as that row's probabilities. The cgo build vectorises it.
func ExpScale(x []float32, m, inv float32) {
	if len(x) >= minVecExp {
		expScaleVec(x, m, inv)
		return
	}
	expScaleGo(x, m, inv)
}

func expScaleGo(x []float32, m, inv float32) {
	for i, v := range x {
		x[i] = exp1(v-m) * inv
	}
}

// expSums replaces a and b by their exponentials shifted by m, the largest
// value of both, each part's computed and summed by expSum, and returns m
// and 1/Σ.
func expSums(a, b []float32, expSum func([]float32, float32) float32) (m, inv float32) {
	m = maxOf(b, maxOf(a, float32(math.Inf(-1))))
	var sa, sb float32
	if len(a) > 0 {
		sa = expSum(a, m)
	}
	if len(b) > 0 {
		sb = expSum(b, m)
	}
	return m, 1 / (sa + sb)
}

// maxOf is the largest of m and x (NaNs skipped).
func maxOf(x []float32, m float32) float32 {
	for _, v := range x {
		if v > m {
			m = v
		}
	}
	return m
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
