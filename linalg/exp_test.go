package linalg

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpShift holds ExpShift (vectorised in the cgo build) to the Go
// version bit for bit, and the Go version to math.Exp (3e-7 relative).
func TestExpShift(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 63, 64, 65, 1000, 4099} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * 30)
		}
		x[0] = float32(math.NaN())
		if n > 3 {
			x[1], x[2], x[3] = -1000, 1000, 0
		}
		a, b := append([]float32(nil), x...), append([]float32(nil), x...)
		m := float32(1.5)
		sa, sb := ExpShift(a, m), expShiftGo(b, m)
		if math.Float32bits(sa) != math.Float32bits(sb) && !(sa != sa && sb != sb) {
			t.Errorf("n=%d: sum %g, Go %g", n, sa, sb)
		}
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) {
				t.Fatalf("n=%d: exp(%g − %g) = %g, Go %g", n, x[i], m, a[i], b[i])
			}
			v := float64(x[i]) - float64(m)
			if v > -87 && v < 88 {
				if e := math.Exp(float64(float32(v))); math.Abs(float64(b[i])-e)/e > 3e-7 {
					t.Errorf("exp(%g) = %g, want %g", v, b[i], e)
				}
			}
		}
	}
}

func BenchmarkExpShift(b *testing.B) {
	x := make([]float32, 2048)
	for _, f := range []struct {
		name string
		f    func([]float32, float32) float32
	}{{"ExpShift", ExpShift}, {"Go", expShiftGo}} {
		b.Run(f.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				for j := range x {
					x[j] = float32(j%97) / -10
				}
				f.f(x, 0)
			}
			b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds()/1e6, "Mexp/s")
		})
	}
}
