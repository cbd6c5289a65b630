package linalg

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestFrozen: bf16 products over frozen operands (whole slices and views
// inside them, transposed or not, prefixes of rows) equal the unfrozen
// products bit for bit, and Freeze after a change of contents (or a Thaw)
// uses the new contents.
func TestFrozen(t *testing.T) {
	if !HasBF16() {
		t.Skip("no bf16 products in this build")
	}
	defer SetPrecision(CurrentPrecision())
	if err := SetPrecision(BF16); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	a, b := randSlice(r, 64*80), randSlice(r, 96*80)
	product := func(tA, tB bool, m, n, k, lda, ldb int, a, b []float32) []float32 {
		c := make([]float32, m*n)
		Gemm32(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, c, n)
		return c
	}
	type call struct {
		tA, tB         bool
		m, n, k        int
		lda, ldb, aoff int
	}
	calls := []call{
		{false, true, 64, 96, 80, 80, 80, 0},       // X·Wᵀ
		{false, true, 32, 96, 80, 80, 80, 32 * 80}, // rows 32.. of X
		{false, true, 64, 96, 40, 80, 80, 40},      // a column band of X
		{true, false, 80, 80, 64, 80, 80, 0},       // Xᵀ·W-like (B = a's first 64 rows as k×n)
		// views of fewer rows than their slice holds from their start on
		// (attention's key prefixes): they read a rounding of all the rows
		{false, true, 16, 96, 80, 80, 80, 0},         // the first 16 rows of X as A
		{false, true, 64, 48, 80, 80, 80, 0},         // the first 48 rows of W as Bᵀ
		{false, false, 64, 80, 48, 80, 80, 0},        // the first 48 rows of W as B
		{false, true, 24, 40, 16, 80, 80, 8*80 + 16}, // a head-like column band, rows 8..32
	}
	var want [][]float32
	for _, c := range calls {
		bb := b
		if c.tA {
			bb = a
		}
		want = append(want, product(c.tA, c.tB, c.m, c.n, c.k, c.lda, c.ldb, a[c.aoff:], bb))
	}
	Freeze(a)
	Freeze(b)
	for rep := 0; rep < 2; rep++ { // the second time from the kept roundings
		for i, c := range calls {
			bb := b
			if c.tA {
				bb = a
			}
			got := product(c.tA, c.tB, c.m, c.n, c.k, c.lda, c.ldb, a[c.aoff:], bb)
			for j := range got {
				if math.Float32bits(got[j]) != math.Float32bits(want[i][j]) {
					t.Fatalf("call %d (rep %d): frozen product differs at %d: %g, want %g", i, rep, j, got[j], want[i][j])
				}
			}
		}
	}
	for i := range a {
		a[i] = -a[i]
	}
	Freeze(a) // new contents
	got := product(false, true, 64, 96, 80, 80, 80, a, b)
	for j := range got {
		if got[j] != -want[0][j] {
			t.Fatalf("after Freeze of new contents: %g, want %g", got[j], -want[0][j])
		}
	}
	// thawed, then frozen again: recycled buffers hold the new roundings
	Thaw(a)
	for i := range a {
		a[i] = -a[i]
	}
	Freeze(a)
	got = product(false, true, 16, 96, 80, 80, 80, a, b)
	for j := range got {
		if math.Float32bits(got[j]) != math.Float32bits(want[4][j]) {
			t.Fatalf("after Thaw and Freeze: %g, want %g", got[j], want[4][j])
		}
	}
	Thaw(a)
	Thaw(b)
	if n := frozenCount(); n != 0 {
		t.Errorf("%d slices still frozen after Thaw", n)
	}
}
