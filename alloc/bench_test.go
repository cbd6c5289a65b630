package alloc

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkTailCurve7B is the closed-form curve of one side at the
// Llama-2-7B layer shape (hidden 4096, kv_dim 4096): W·XᵀX·Wᵀ and one
// symmetric eigendecomposition of 4096. Memory: XᵀX, W·XᵀX and P, 128 MiB
// each in float64.
func BenchmarkTailCurve7B(b *testing.B) {
	const d, kv = 4096, 4096
	rng := rand.New(rand.NewPCG(1, 1))
	w := make([]float32, kv*d)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	g := make([]float64, d*d) // a diagonally dominant symmetric stand-in for XᵀX
	for i := 0; i < d; i++ {
		g[i*d+i] = 1 + rng.Float64()
	}
	b.ResetTimer()
	for range b.N {
		if _, err := TailCurve(w, g, kv, d); err != nil {
			b.Fatal(err)
		}
	}
}
