package linalg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestToBF16 holds ToBF16 to the rounding of oneDNN's bf16 products: a
// product with the identity returns each element of A rounded to bf16
// (exactly, accumulated in float32). The values include ties in both
// directions, the largest finite ones and values from four decades; not
// subnormals or −0, which the products read as +0 however they are
// rounded (and an infinity would turn its row into NaN: inf·0).
func TestToBF16(t *testing.T) {
	if !HasBF16() {
		t.Skip("no bf16 products in this build")
	}
	defer SetPrecision(CurrentPrecision())
	if err := SetPrecision(BF16); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(11, 12))
	const m, k = 64, 32
	a := make([]float32, m*k)
	for i := range a {
		a[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(5)-2)))
	}
	specials := []uint32{0x3f808000, 0x3f818000, 0x3f80c000, 0x3f817fff, 0xbf808000, 0x00818000, 0x00808001, 0x7f7e8000, 0xff7f7fff, 0}
	for i, u := range specials {
		a[i] = math.Float32frombits(u)
	}
	id := make([]float32, k*k)
	for i := range k {
		id[i*k+i] = 1
	}
	c := make([]float32, m*k)
	Gemm32(false, false, m, k, k, 1, a, k, id, k, 0, c, k)
	for i, x := range a {
		if got, want := FromBF16(ToBF16(x)), c[i]; math.Float32bits(got) != math.Float32bits(want) {
			t.Errorf("%g (%#08x): ToBF16 %g (%#04x), oneDNN %g (%#08x)", x, math.Float32bits(x), got, ToBF16(x), want, math.Float32bits(want))
		}
	}
}

// TestSoftmaxBF16 holds the bf16 writers of attention's probabilities
// (vectorised in the cgo build) to a float64 softmax written here: each
// exponential within 2⁻⁸ of exp(x − m) relative (bf16's rounding, 2⁻⁹, and
// float32's exponential) or 1e-44 absolute (denormals), 1/Σ within 1e-6;
// ExpBF16 on any part of a row to the row's bits (the recomputing backward
// reads what the forward wrote); the Go versions to the vectorised ones
// within one bf16 ulp; ScaleDiffBF16 to its float32 operations rounded by
// ToBF16, bit for bit.
func TestSoftmaxBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	round := func(x []float32) []uint16 {
		out := make([]uint16, len(x))
		for i, v := range x {
			out[i] = ToBF16(v)
		}
		return out
	}
	same := func(what string, got, want []uint16) {
		t.Helper()
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: element %d is %#04x, want %#04x", what, i, got[i], want[i])
			}
		}
	}
	near := func(what string, got, want []uint16) {
		t.Helper()
		for i := range want {
			if d := int(got[i]) - int(want[i]); d > 1 || d < -1 {
				t.Fatalf("%s: element %d is %#04x, want %#04x within one ulp", what, i, got[i], want[i])
			}
		}
	}
	denormal := func(xs ...[]uint16) (n int) {
		for _, x := range xs {
			for _, v := range x {
				if v&0x7f80 == 0 && v&0x7f != 0 {
					n++
				}
			}
		}
		return n
	}
	check := func(n string, a, b, s []float32) (denormals int) {
		t.Helper()
		ra, rb := make([]uint16, len(a)), make([]uint16, len(b))
		m, inv := SoftmaxExpBF16(a, b, ra, rb)
		wm := math.Inf(-1)
		for _, v := range append(append([]float32(nil), a...), b...) {
			wm = math.Max(wm, float64(v))
		}
		if float64(m) != wm {
			t.Fatalf("%s: shift %g, want %g", n, m, wm)
		}
		var sum float64
		for part, x := range [][]float32{a, b} {
			got := [][]uint16{ra, rb}[part]
			for i, v := range x {
				e := math.Exp(float64(v) - wm)
				sum += e
				if g := float64(FromBF16(got[i])); math.Abs(g-e) > math.Max(e/256, 1e-44) {
					t.Fatalf("%s: exponential %d of part %d is %g, want %g", n, i, part, g, e)
				}
			}
		}
		if math.Abs(float64(inv)*sum-1) > 1e-6 {
			t.Fatalf("%s: 1/Σ %g, want %g", n, inv, 1/sum)
		}
		for _, span := range [][2]int{{0, len(a)}, {len(a) / 3, len(a)}, {1, len(a) / 2}} {
			if span[0] > span[1] {
				continue
			}
			e := make([]uint16, span[1]-span[0])
			ExpBF16(a[span[0]:span[1]], e, m)
			same(fmt.Sprintf("%s: ExpBF16 of %v", n, span), e, ra[span[0]:span[1]])
		}
		goA, goB := make([]uint16, len(a)), make([]uint16, len(b))
		gm, ginv := softmaxExpBF16Go(a, b, goA, goB)
		near("softmaxExpBF16Go a", goA, ra)
		near("softmaxExpBF16Go b", goB, rb)
		if gm != m || math.Abs(float64(ginv/inv)-1) > 1e-6 {
			t.Fatalf("%s: Go shift, 1/Σ %g, %g; vectorised %g, %g", n, gm, ginv, m, inv)
		}

		want := make([]float32, len(a))
		for i := range want {
			want[i] = FromBF16(ra[i]) * (s[i] - 0.25) * inv
		}
		ds, dg := make([]uint16, len(a)), make([]uint16, len(a))
		ScaleDiffBF16(ds, s, ra, 0.25, inv)
		scaleDiffBF16Go(dg, s, ra, 0.25, inv)
		same("ScaleDiffBF16", ds, round(want))
		same("scaleDiffBF16Go", dg, ds)
		return denormal(ra, rb, ds)
	}
	for _, n := range [][2]int{{0, 5}, {7, 0}, {40, 30}, {300, 129}, {2048, 0}} {
		a, b := randSlice(r, n[0]), randSlice(r, n[1])
		for i := range a {
			a[i] *= 8
		}
		check(fmt.Sprint(n), a, b, randSlice(r, len(a)))
	}
	// Denormal results (which the vector conversion of AVX512-BF16 would
	// flush to zero): scores 87.5 to 103 below the row's largest give
	// denormal exponentials, and beyond that 0; and the products' NaN and
	// infinite inputs.
	a := make([]float32, 100)
	for i := range a {
		a[i] = -float32(i%8) * 12.5
	}
	a[5], a[13] = -103, -110
	s := randSlice(r, len(a))
	s[3], s[20], s[41] = float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))
	for i := 50; i < 70; i++ {
		s[i] = 0.25 + 1e-3 // small differences: products of the small probabilities are denormal
	}
	if n := check("denormals", a, a[:16], s); n == 0 {
		t.Error("the special values gave no denormal results")
	}
	// A NaN score gives NaN exponentials (and shift).
	ra := make([]uint16, 3)
	SoftmaxExpBF16([]float32{1, float32(math.NaN()), 2}, nil, ra, nil)
	if v := FromBF16(ra[1]); v == v {
		t.Errorf("NaN score: exponential %g, want NaN", v)
	}
}

// TestGemmBF16: a product with an operand given in bf16 equals the bf16
// product of its float32 widening (whose rounding is then exact) bit for
// bit, dense (read as it lies, transposed or not) or strided (reordered),
// as A or B, transposed or not, threaded or serial; without oneDNN, the float32
// product of the widening.
func TestGemmBF16(t *testing.T) {
	if !HasBF16() {
		// The pure-Go build widens the bf16 operand and multiplies in float32.
		a16, b := []uint16{ToBF16(1.5), ToBF16(-2), ToBF16(0.25), ToBF16(3)}, []float32{1, 2, 3, 4, 5, 6}
		want, got := make([]float32, 6), make([]float32, 6)
		Gemm32(false, false, 2, 3, 2, 1, []float32{1.5, -2, 0.25, 3}, 2, b, 3, 0, want, 3)
		GemmBF16(false, 2, 3, 2, 1, Operand{BF16: a16, LD: 2}, Operand{F32: b, LD: 3}, 0, got, 3)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("widened product element %d is %g, want %g", i, got[i], want[i])
			}
		}
		return
	}
	defer SetPrecision(CurrentPrecision())
	if err := SetPrecision(BF16); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(15, 16))
	bf := func(n int) ([]uint16, []float32) {
		b := make([]uint16, n)
		w := make([]float32, n)
		for i := range b {
			b[i] = ToBF16(float32(r.NormFloat64()))
			w[i] = FromBF16(b[i])
		}
		return b, w
	}
	type call struct {
		a16, b16, tA, tB, serial bool
		m, n, k, lda, ldb        int
	}
	calls := []call{
		{true, false, false, true, false, 256, 64, 512, 512, 512},    // P·V-like: A dense
		{true, false, false, false, true, 256, 64, 512, 600, 64},     // A strided
		{false, true, true, false, true, 64, 512, 256, 64, 512},      // dOᵀ·P: B dense
		{false, true, true, false, false, 64, 512, 256, 64, 520},     // B strided
		{false, true, false, true, true, 96, 128, 64, 64, 64},        // B dense transposed
		{true, true, false, false, false, 128, 256, 1024, 1024, 256}, // both
		{true, false, true, false, true, 512, 128, 256, 512, 128},    // Eᵀ·dO: A dense transposed
		{true, false, true, false, false, 200, 128, 256, 208, 128},   // A strided transposed
	}
	for _, c := range calls {
		arows, acols := c.m, c.k
		if c.tA {
			arows, acols = c.k, c.m
		}
		brows, bcols := c.k, c.n
		if c.tB {
			brows, bcols = c.n, c.k
		}
		a16, a32 := bf((arows-1)*c.lda + acols)
		b16, b32 := bf((brows-1)*c.ldb + bcols)
		want := make([]float32, c.m*c.n)
		if c.serial {
			Gemm32Serial(c.tA, c.tB, c.m, c.n, c.k, 0.5, a32, c.lda, b32, c.ldb, 0, want, c.n)
		} else {
			Gemm32(c.tA, c.tB, c.m, c.n, c.k, 0.5, a32, c.lda, b32, c.ldb, 0, want, c.n)
		}
		opA, opB := Operand{F32: a32, LD: c.lda, T: c.tA}, Operand{F32: b32, LD: c.ldb, T: c.tB}
		if c.a16 {
			opA = Operand{BF16: a16, LD: c.lda, T: c.tA}
		}
		if c.b16 {
			opB = Operand{BF16: b16, LD: c.ldb, T: c.tB}
		}
		got := make([]float32, c.m*c.n)
		for i := range got {
			got[i] = 1 // beta 0 must overwrite
		}
		GemmBF16(c.serial, c.m, c.n, c.k, 0.5, opA, opB, 0, got, c.n)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%+v: element %d is %g, want %g", c, i, got[i], want[i])
			}
		}
	}
}

// TestSoftmaxExpBF16Rows: the one-call tile softmax writes, row by row,
// SoftmaxExpBF16's exponentials, shift and 1/Σ bit for bit, with zeros
// outside each row's spans, with and without the second part, and empty
// spans included.
func TestSoftmaxExpBF16Rows(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, ldo := range []int{0, 7} {
		const rows, ldp = 6, 37
		p, po := randSlice(r, rows*ldp), randSlice(r, rows*max(ldo, 1))
		for i := range p {
			p[i] *= 9
		}
		span := make([]int32, 4*rows)
		for i := range rows {
			first := r.IntN(5)
			lo := first + r.IntN(ldp-first+1)
			if i == 2 {
				lo = first // an empty first part
			}
			span[4*i], span[4*i+1] = int32(first), int32(lo)
			if ldo > 0 {
				of := r.IntN(ldo)
				span[4*i+2], span[4*i+3] = int32(of), int32(of+r.IntN(ldo-of+1))
			}
		}
		p16, po16 := make([]uint16, rows*ldp), make([]uint16, rows*ldo)
		for i := range p16 {
			p16[i] = 0xffff // must be overwritten
		}
		for i := range po16 {
			po16[i] = 0xffff
		}
		st := make([]float32, 2*rows)
		SoftmaxExpBF16Rows(p, ldp, po[:rows*ldo], ldo, p16, po16, span, st)
		for i := range rows {
			first, lo, of, ol := int(span[4*i]), int(span[4*i+1]), int(span[4*i+2]), int(span[4*i+3])
			wa, wb := make([]uint16, ldp), make([]uint16, ldo)
			var b []float32
			if ldo > 0 {
				b = po[i*ldo+of : i*ldo+ol]
			}
			m, inv := SoftmaxExpBF16(p[i*ldp+first:i*ldp+lo], b, wa[first:lo], wb[of:ol])
			if math.Float32bits(st[2*i]) != math.Float32bits(m) || math.Float32bits(st[2*i+1]) != math.Float32bits(inv) {
				t.Fatalf("ldo %d row %d: shift, 1/Σ %g, %g; want %g, %g", ldo, i, st[2*i], st[2*i+1], m, inv)
			}
			for j, w := range wa {
				if p16[i*ldp+j] != w {
					t.Fatalf("ldo %d row %d: exponential %d is %#04x, want %#04x", ldo, i, j, p16[i*ldp+j], w)
				}
			}
			for j, w := range wb {
				if po16[i*ldo+j] != w {
					t.Fatalf("ldo %d row %d: second part %d is %#04x, want %#04x", ldo, i, j, po16[i*ldo+j], w)
				}
			}
		}
	}
}
