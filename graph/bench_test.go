package graph

import (
	"testing"
	"time"

	"github.com/cskv/cskv/linalg"
)

// benchStep measures one training step: Run (forward + backward, including
// the per-batch target precomputation) and an in-place SGD update.
func benchStep(b *testing.B, shape BenchShape, outSeqs, window int) {
	s := NewRandomSpec(shape, 1)
	if outSeqs > 0 {
		s.OutSeqs, s.LambdaOut, s.OutWindow = outSeqs, 1, window
	}
	l, err := NewLayer(s, RandomFactors(s, 2))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	x := RandomInput(s, 3)
	ps := l.Params()
	b.Logf("%s, backend %s", shape.Name, linalg.Backend())
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if _, err := l.Run(x); err != nil {
			b.Fatal(err)
		}
		for _, p := range ps {
			for i, g := range p.Grad {
				p.Value[i] -= 1e-4 * g
			}
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/step")
}

// stories260K layer: hidden 64, 8 heads, 4 KV heads, rank 16, 8 × 512 tokens.
func BenchmarkStepStoriesKV(b *testing.B)   { benchStep(b, ShapeStories260K, 0, 0) }
func BenchmarkStepStoriesBoth(b *testing.B) { benchStep(b, ShapeStories260K, 2, 0) }

// with the bi-branch window of the paper (32 tokens, block mode).
func BenchmarkStepStoriesBothW32(b *testing.B) { benchStep(b, ShapeStories260K, 2, 32) }

// Llama-3-8B-like GQA layer, KV loss: several seconds per iteration on 2 cores.
func BenchmarkStepLlama3_8BKV(b *testing.B) {
	if testing.Short() {
		b.Skip("large shape")
	}
	benchStep(b, ShapeLlama3_8B, 0, 0)
}

// Llama-2-7B layer, KV loss.
func BenchmarkStepLlama2_7BKV(b *testing.B) {
	if testing.Short() {
		b.Skip("large shape")
	}
	benchStep(b, ShapeLlama2_7B, 0, 0)
}
