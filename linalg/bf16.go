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

// SoftmaxExpBF16 is the softmax of the concatenation of a and b with its
// normalisation left to the caller, in bf16: m is the largest score, ra and
// rb (len(ra) = len(a), len(rb) = len(b)) get exp(a[i] − m) and exp(b[i] −
// m) rounded to bf16 (ToBF16), and inv is 1/Σ of the float32 exponentials,
// so that the probabilities are inv·ra and inv·rb. a and b are only read.
// The exponentials are computed with fused multiply-adds (about 1 ulp of
// float32, 0 below −104; the sum in 16 partial sums, as Softmax2Lanes
// takes it): attention's bf16 probabilities, whose normalisation it
// applies to the products' outputs (package attn). The cgo build computes
// every row in C, with vector instructions where the CPU has AVX512-BF16
// (the same bits without); the Go version, for the build without it,
// agrees within an ulp of float32 before the rounding to bf16.
func SoftmaxExpBF16(a, b []float32, ra, rb []uint16) (m, inv float32) {
	if len(a)+len(b) >= vecBF16 {
		return softmaxExpBF16Vec(a, b, ra, rb)
	}
	return softmaxExpBF16Go(a, b, ra, rb)
}

// SoftmaxExpBF16Rows is SoftmaxExpBF16 on each row of a tile, in one call
// (attention's bf16 forward: a call a row cost it about 0.2 µs of the
// cgo boundary and setup each). Row r (len(span)/4 rows) reads p[r·ldp +
// first, r·ldp + lo) and po[r·ldo + ofirst, r·ldo + olast), with span[4r…4r+3]
// = first, lo, ofirst, olast, as SoftmaxExpBF16's a and b; it writes their
// exponentials at the same places of p16 and po16, zeros in the rest of its
// ldp and ldo elements, and its shift and 1/Σ to st[2r] and st[2r+1]. ldo 0:
// no second part (po, po16 unused). The bits are SoftmaxExpBF16's.
func SoftmaxExpBF16Rows(p []float32, ldp int, po []float32, ldo int, p16, po16 []uint16, span []int32, st []float32) {
	rows := len(span) / 4
	if rows == 0 {
		return
	}
	for r := range rows {
		sp := span[4*r : 4*r+4]
		if sp[0] < 0 || sp[0] > sp[1] || int(sp[1]) > ldp || (ldo > 0 && (sp[2] < 0 || sp[2] > sp[3] || int(sp[3]) > ldo)) || (ldo == 0 && sp[2] != sp[3]) {
			panic(fmt.Sprintf("linalg: SoftmaxExpBF16Rows: row %d span %v outside %d and %d", r, sp, ldp, ldo))
		}
	}
	if len(p) < rows*ldp || len(p16) < rows*ldp || len(po) < rows*ldo || len(po16) < rows*ldo || len(st) < 2*rows {
		panic(fmt.Sprintf("linalg: SoftmaxExpBF16Rows: %d rows of %d and %d need more than p %d, p16 %d, po %d, po16 %d, st %d",
			rows, ldp, ldo, len(p), len(p16), len(po), len(po16), len(st)))
	}
	softmaxExpBF16RowsVec(p, ldp, po, ldo, p16, po16, span, st)
}

func softmaxExpBF16RowsGo(p []float32, ldp int, po []float32, ldo int, p16, po16 []uint16, span []int32, st []float32) {
	for r := range len(span) / 4 {
		first, lo, of, ol := int(span[4*r]), int(span[4*r+1]), int(span[4*r+2]), int(span[4*r+3])
		q := p16[r*ldp : (r+1)*ldp]
		var b []float32
		var qo []uint16
		if ldo > 0 {
			b, qo = po[r*ldo+of:r*ldo+ol], po16[r*ldo:(r+1)*ldo]
		}
		m, inv := SoftmaxExpBF16(p[r*ldp+first:r*ldp+lo], b, q[first:lo], qo[of:ol])
		clear(q[:first])
		clear(q[lo:])
		if ldo > 0 {
			clear(qo[:of])
			clear(qo[ol:])
		}
		st[2*r], st[2*r+1] = m, inv
	}
}

func softmaxExpBF16Go(a, b []float32, ra, rb []uint16) (m, inv float32) {
	m = float32(math.Inf(-1))
	for _, x := range [][]float32{a, b} {
		for _, v := range x {
			if v > m {
				m = v
			}
		}
	}
	sa := expBF16Go(a, ra, m)
	sb := expBF16Go(b, rb, m)
	return m, 1 / (sa + sb)
}

// ExpBF16 sets r[i] = exp(x[i] − m) rounded to bf16 (len(r) = len(x)),
// the exponentials of SoftmaxExpBF16.
func ExpBF16(x []float32, r []uint16, m float32) {
	if len(x) >= vecBF16 {
		expBF16Vec(x, r, m)
		return
	}
	expBF16Go(x, r, m)
}

// expBF16Go is ExpBF16 returning the sum of the exponentials as
// SoftmaxExpBF16 takes it.
func expBF16Go(x []float32, r []uint16, m float32) float32 {
	r = r[:len(x)]
	return laneSum(len(x), func(i int) float32 {
		e := expFMA(x[i] - m)
		r[i] = ToBF16(e)
		return e
	})
}

// expFMA is the exponential of SoftmaxExpBF16 in Go (float64 fused
// multiply-adds rounded to float32: within an ulp of the C version's).
func expFMA(v float32) float32 {
	if v != v {
		return v
	}
	v = min(max(v, -104), expHi)
	fma := func(a, b, c float32) float32 { return float32(math.FMA(float64(a), float64(b), float64(c))) }
	n := float32(math.RoundToEven(float64(v * expLog2e)))
	r := fma(n, -expLn2Hi, v)
	r = fma(n, -expLn2Lo, r)
	p := float32(expP0)
	for _, c := range []float32{expP1, expP2, expP3, expP4, expP5, 1, 1} {
		p = fma(p, r, c)
	}
	return float32(math.Ldexp(float64(p), int(n)))
}

// ScaleDiffBF16 sets ds[i] = p[i]·(s[i] − d)·f rounded to bf16, for bf16
// p (len(p), len(s) ≥ len(ds)): the softmax backward of one row, dS = P ⊙
// (dP − d), with P = f·p for SoftmaxExpBF16's exponentials p and 1/Σ f.
func ScaleDiffBF16(ds []uint16, s []float32, p []uint16, d, f float32) {
	if len(ds) >= vecBF16 {
		scaleDiffBF16Vec(ds, s, p, d, f)
		return
	}
	scaleDiffBF16Go(ds, s, p, d, f)
}

func scaleDiffBF16Go(ds []uint16, s []float32, p []uint16, d, f float32) {
	s, p = s[:len(ds)], p[:len(ds)]
	for i, pv := range p {
		ds[i] = ToBF16(FromBF16(pv) * (s[i] - d) * f)
	}
}

// checkBF16 panics unless a slice that C is about to read or write holds
// the need values it touches.
func checkBF16(what string, need, have int) {
	if have < need {
		panic(fmt.Sprintf("linalg: %s: a slice of %d values where %d are touched", what, have, need))
	}
}
