package graph

import (
	"math"
	"testing"

	"github.com/cskv/cskv/model"
)

// TestRopeInverse: the inverse rotation undoes the rotation, and position 0
// is the identity.
func TestRopeInverse(t *testing.T) {
	rope, err := model.RopeScaling{}.Rope(10000, 8, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := newRope[float64](5, rope)
	x := make([]float64, 5*16)
	for i := range x {
		x[i] = float64(i%7) - 3
	}
	y := make([]float64, len(x))
	r.apply(y, x, 5, 16, false)
	for i := 0; i < 16; i++ {
		if y[i] != x[i] {
			t.Fatalf("position 0 not the identity: %v vs %v", y[:16], x[:16])
		}
	}
	r.apply(y, y, 5, 16, true)
	for i := range x {
		if math.Abs(y[i]-x[i]) > 1e-12 {
			t.Fatalf("inverse rope: %g, want %g", y[i], x[i])
		}
	}
}

// TestSqDiffSplit holds the split sums (sqDiff, sumSq) of a wide layer's
// size to the single loop (float64 partial sums: equal to 1e-10, relative),
// sqDiff's differences to a − b exactly, and sumSq below the split size to
// the single loop bit for bit.
func TestSqDiffSplit(t *testing.T) {
	n := minSplit + 12345
	a, b := make([]float32, n), make([]float32, n)
	for i := range a {
		a[i], b[i] = float32(i%97)/13, float32(i%89)/11
	}
	d1, d2 := make([]float32, n), make([]float32, n)
	got, want := sqDiff(d1, a, b), sqDiffPart(d2, a, b)
	if math.Abs(got-want) > 1e-10*want {
		t.Errorf("split sum %v, single loop %v", got, want)
	}
	for i := range d1 {
		if d1[i] != a[i]-b[i] {
			t.Fatalf("diff[%d] = %v, want %v", i, d1[i], a[i]-b[i])
		}
	}
	// sumSq: split at this size, one loop below minSplit.
	var loop float64
	for _, v := range a {
		loop += float64(v) * float64(v)
	}
	if got := sumSq(a); math.Abs(got-loop) > 1e-10*loop {
		t.Errorf("split Σx² %v, single loop %v", got, loop)
	}
	small := a[:minSplit-1]
	loop = 0
	for _, v := range small {
		loop += float64(v) * float64(v)
	}
	if got := sumSq(small); got != loop {
		t.Errorf("Σx² below minSplit %v, want the single loop's %v exactly", got, loop)
	}
}
