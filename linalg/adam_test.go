package linalg

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAdamUpdate holds AdamUpdate (vectorised in the cgo build) to the Go
// version bit for bit over several steps, on lengths around the vector
// widths, gradients over many scales, zeros and a moment of zero, and holds
// the Go version to the update computed in float64 (1e-5 relative).
func TestAdamUpdate(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 15, 255, 256, 257, 1000, 4103} {
		grad := make([]float32, n)
		value := make([]float32, n)
		for i := range value {
			value[i] = float32(r.NormFloat64())
		}
		a, ma, va := append([]float32(nil), value...), make([]float32, n), make([]float32, n)
		b, mb, vb := append([]float32(nil), value...), make([]float32, n), make([]float32, n)
		for step := 1; step <= 4; step++ {
			for i := range grad {
				grad[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(12)-8)))
			}
			grad[0] = 0
			bc1, bc2 := 1-math.Pow(0.9, float64(step)), 1-math.Pow(0.999, float64(step))
			p := AdamParams{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, StepSize: float32(1e-3 / bc1), SqrtBC2: float32(math.Sqrt(bc2))}
			want := make([]float64, n)
			for i, g := range grad {
				m := 0.9*float64(mb[i]) + 0.1*float64(g)
				v := 0.999*float64(vb[i]) + 0.001*float64(g)*float64(g)
				want[i] = float64(b[i]) - float64(p.StepSize)*m/(math.Sqrt(v)/float64(p.SqrtBC2)+1e-8)
			}
			AdamUpdate(a, grad, ma, va, p)
			adamGo(b, grad, mb, vb, p)
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) || math.Float32bits(ma[i]) != math.Float32bits(mb[i]) ||
					math.Float32bits(va[i]) != math.Float32bits(vb[i]) {
					t.Fatalf("n=%d step %d element %d: value, m, v = %g, %g, %g; Go %g, %g, %g", n, step, i, a[i], ma[i], va[i], b[i], mb[i], vb[i])
				}
				if d := math.Abs(float64(b[i]) - want[i]); d > 1e-5*math.Max(math.Abs(want[i]), 1e-3) {
					t.Fatalf("n=%d step %d element %d: %g, float64 %g", n, step, i, b[i], want[i])
				}
			}
		}
	}
}

func BenchmarkAdamUpdate(b *testing.B) {
	n := 1 << 21
	value, grad, m, v := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range grad {
		grad[i] = float32(i%7) - 3
	}
	p := AdamParams{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, StepSize: 1e-3, SqrtBC2: 0.5}
	b.Run("vec", func(b *testing.B) {
		for range b.N {
			AdamUpdate(value, grad, m, v, p)
		}
	})
	b.Run("go", func(b *testing.B) {
		for range b.N {
			adamGo(value, grad, m, v, p)
		}
	})
}
