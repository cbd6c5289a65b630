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
