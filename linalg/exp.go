package linalg

import "math"

// Constants of ExpShift (Cephes expf): range reduction by ln 2 split in two
// parts, a degree-6 polynomial on [−ln2/2, ln2/2], and rounding to the
// nearest integer by adding 1.5·2²³. dnnl_exp.c holds the same numbers.
const (
	expLo    = -87.33654 // exp(expLo) is the smallest normal float32
	expHi    = 88.72283
	expLog2e = 1.44269504088896341
	expLn2Hi = 0.693359375
	expLn2Lo = -2.12194440e-4
	expMagic = 12582912 // 1.5·2²³
	expP0    = 1.9875691500e-4
	expP1    = 1.3981999507e-3
	expP2    = 8.3334519073e-3
	expP3    = 4.1665795894e-2
	expP4    = 1.6666665459e-1
	expP5    = 5.0000001201e-1
)

// ExpShift replaces x by exp(x − m) and returns their sum, summed in order
// (float32, about 1 ulp; inputs below expLo give the smallest normal
// float32, ≈ 1.2e-38, rather than 0). The cgo build computes the
// exponentials with the CPU's vector instructions, bit for bit the same.
func ExpShift(x []float32, m float32) float32 {
	if len(x) >= minVecExp {
		return expShiftVec(x, m)
	}
	return expShiftGo(x, m)
}

// expShiftGo is ExpShift in Go.
func expShiftGo(x []float32, m float32) float32 {
	var s float32
	for i, v := range x {
		e := exp1(v - m)
		x[i] = e
		s += e
	}
	return s
}

// expShiftLanes is ExpShift with the sum taken in 16 interleaved partial
// sums (lane j adds elements j, j+16, … of the whole 16-element chunks),
// added in lane order, then the tail in order: vector instructions compute
// it in the same pass as the exponentials (see Softmax2Lanes).
func expShiftLanes(x []float32, m float32) float32 {
	return laneSum(len(x), func(i int) float32 {
		e := exp1(x[i] - m)
		x[i] = e
		return e
	})
}

// laneSum returns the sum of e(0), …, e(n−1), calling e in order, in 16
// interleaved partial sums as expShiftLanes takes them.
func laneSum(n int, e func(i int) float32) float32 {
	var acc [16]float32
	i := 0
	for ; i+16 <= n; i += 16 {
		for j := range acc {
			acc[j] += e(i + j)
		}
	}
	var s float32
	for _, a := range acc {
		s += a
	}
	for ; i < n; i++ {
		s += e(i)
	}
	return s
}

// exp1 is exp(v) as ExpShift computes it.
func exp1(v float32) float32 {
	if v < expLo {
		v = expLo
	}
	if v > expHi {
		v = expHi
	}
	t := v*expLog2e + expMagic
	fk := t - expMagic
	k := int32(math.Float32bits(t)) - 0x4B400000
	r := v - fk*expLn2Hi - fk*expLn2Lo
	p := float32(expP0)
	p = p*r + expP1
	p = p*r + expP2
	p = p*r + expP3
	p = p*r + expP4
	p = p*r + expP5
	return (p*r*r + r + 1) * math.Float32frombits(uint32(k+127)<<23)
}

// SiLUGate sets g[i] = SiLU(g[i])·u[i] = g[i]/(1 + exp(−g[i]))·u[i], the
// gate of a SwiGLU MLP, with ExpShift's exponential (float32, about 1 ulp;
// the vector instructions of the cgo build give the same bits). Large
// inputs stay finite: exp's range is clamped, so SiLU(x) is x above 87 and
// a tiny x·e^x below −88.
func SiLUGate(g, u []float32) {
	if len(g) >= minVecExp {
		siluGateVec(g, u)
		return
	}
	siluGateGo(g, u)
}

// siluGateGo is SiLUGate in Go.
func siluGateGo(g, u []float32) {
	u = u[:len(g)]
	for i, x := range g {
		g[i] = x / (1 + exp1(-x)) * u[i]
	}
}
