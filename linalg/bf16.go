package linalg

import (
	"fmt"
	"math"
	"time"
)

// Operand is one factor of GemmBF16: float32 values (F32) or, when F32 is
// nil, bfloat16 bits (BF16: the upper half of a float32), stored row-major
// with leading dimension LD, read transposed when T.
type Operand struct {
	F32  []float32
	BF16 []uint16
	LD   int
	T    bool
}

// GemmBF16 is C = alpha·op(A)·op(B) + beta·C in bf16 (bf16 operands,
// float32 accumulation) with either operand given already in bf16, so that
// a producer that writes bf16 (attention's probabilities) spares the
// product its rounding; float32 operands are rounded as by Gemm32 (once per
// view when frozen). Serial runs it on the calling thread alone
// (Gemm32Serial). Where oneDNN has no kernel for it, the bf16 operands are
// widened to float32 for BLAS.
func GemmBF16(serial bool, m, n, k int, alpha float32, a, b Operand, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if counting.Load() {
		defer countProduct(serial, m, n, k, time.Now())
	}
	if hasDNNL && k > 0 && dnnlProduct(true, serial, m, n, k, alpha, a, b, beta, c, ldc) {
		return
	}
	impl.Sgemm(trans(a.T), trans(b.T), m, n, k, alpha, a.widen(), a.LD, b.widen(), b.LD, beta, c, ldc)
}

// widen is o's values in float32.
func (o Operand) widen() []float32 {
	if o.F32 != nil {
		return o.F32
	}
	w := make([]float32, len(o.BF16))
	for i, v := range o.BF16 {
		w[i] = FromBF16(v)
	}
	return w
}

// ToBF16 rounds x to bfloat16, to nearest with ties to even (as oneDNN's
// reorder rounds; TestToBF16 holds them to each other); a NaN stays a
// (quiet) NaN.
func ToBF16(x float32) uint16 {
	u := math.Float32bits(x)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

// FromBF16 is the float32 of bfloat16 bits v (exact).
func FromBF16(v uint16) float32 { return math.Float32frombits(uint32(v) << 16) }

// Softmax2LanesBF16 is Softmax2Lanes writing the probabilities rounded to
// bf16 into ra and rb (len(ra) = len(a), len(rb) = len(b)): the bits
// Softmax2Lanes would leave in a and b, rounded by ToBF16. a and b are
// left holding the unscaled exponentials.
func Softmax2LanesBF16(a, b []float32, ra, rb []uint16) (m, inv float32) {
	if len(a)+len(b) >= minVecExp {
		return softmax2LanesBF16Vec(a, b, ra, rb)
	}
	return softmax2LanesBF16Go(a, b, ra, rb)
}

func softmax2LanesBF16Go(a, b []float32, ra, rb []uint16) (m, inv float32) {
	m, inv = expSums(a, b, expShiftLanes)
	for i, v := range a {
		ra[i] = ToBF16(v * inv)
	}
	for i, v := range b {
		rb[i] = ToBF16(v * inv)
	}
	return m, inv
}

// ExpScaleBF16 sets r[i] to ExpScale's x[i] = exp(x[i] − m)·inv rounded to
// bf16 (len(r) = len(x)); x is left holding the exponentials exp(x[i] − m).
func ExpScaleBF16(x []float32, r []uint16, m, inv float32) {
	if len(x) >= minVecExp {
		expScaleBF16Vec(x, r, m, inv)
		return
	}
	expScaleBF16Go(x, r, m, inv)
}

func expScaleBF16Go(x []float32, r []uint16, m, inv float32) {
	r = r[:len(x)]
	for i, v := range x {
		x[i] = exp1(v - m)
		r[i] = ToBF16(x[i] * inv)
	}
}

// ScaleDiffBF16 sets ds[i] = p[i]·(s[i] − d) rounded to bf16, for bf16
// probabilities p (len(p), len(s) ≥ len(ds)): ScaleDiff's softmax backward
// of one row, written in bf16.
func ScaleDiffBF16(ds []uint16, s []float32, p []uint16, d float32) {
	if len(ds) >= minVecExp {
		scaleDiffBF16Vec(ds, s, p, d)
		return
	}
	scaleDiffBF16Go(ds, s, p, d)
}

func scaleDiffBF16Go(ds []uint16, s []float32, p []uint16, d float32) {
	s, p = s[:len(ds)], p[:len(ds)]
	for i, pv := range p {
		ds[i] = ToBF16(FromBF16(pv) * (s[i] - d))
	}
}

// checkBF16 panics unless a slice that C is about to read or write holds
// the need values it touches.
func checkBF16(what string, need, have int) {
	if have < need {
		panic(fmt.Sprintf("linalg: %s: a slice of %d values where %d are touched", what, have, need))
	}
}
