package graph

import (
	"syscall"
	"testing"
	"time"

	"github.com/cskv/cskv/attn"
	"github.com/cskv/cskv/kv"
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
	start, cpu0 := time.Now(), cpuTime()
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
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/step")
}

// cpuTime is the process's user + system CPU time (all threads): on a shared
// machine it is a steadier measure than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// BenchmarkAttentionStories is the output term's attention kernel alone at
// the stories260K shape (2 sequences × 512 tokens, 8 heads, 4 KV heads × 8):
// forward, then backward on the kept probabilities.
func BenchmarkAttentionStories(b *testing.B) {
	sh := ShapeStories260K
	a := attn.New[float32](2, sh.Tokens, NewRandomSpec(sh, 1).Attn.KernelRule(), 0, kv.WindowBlock)
	a.Keep = true
	rows := 2 * sh.Tokens
	q := RandomInput(LayerSpec{Seqs: 1, Tokens: rows, Hidden: sh.NHeads * sh.HeadDim}, 1)
	k := RandomInput(LayerSpec{Seqs: 1, Tokens: rows, Hidden: sh.KVDim()}, 2)
	v := RandomInput(LayerSpec{Seqs: 1, Tokens: rows, Hidden: sh.KVDim()}, 3)
	o := make([]float32, len(q))
	dk, dv := make([]float32, len(k)), make([]float32, len(k))
	start, cpu0 := time.Now(), cpuTime()
	for b.Loop() {
		a.Forward(o, q, k, v, nil, nil)
		a.Backward(dk, dv, q, k, v, nil, nil, o, q)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/op")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
