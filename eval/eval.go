// Package eval measures a model: perplexity over token chunks with the frozen
// forward, optionally with every layer's keys and values replaced by the
// simulated compressed cache of package kvcache (all-compressed or
// bi-branch, optionally quantised), the per-layer reconstruction errors, and
// the cache memory that setting costs (MemoryTable, the formula of package
// kvcache). On top of those measurements it holds the evaluations the
// commands run: a finished training run (EvaluateRun), projections against
// the uncompressed model (EvaluateCompressed), post-training quantisation
// against quantisation-aware training (Compare), and greedy decoding with a
// cache checked against the parallel evaluation (Greedy, ParallelDiff).
package eval

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

// Result is one perplexity measurement.
type Result struct {
	Tokens     int     `json:"tokens"`       // tokens evaluated (chunks × seq_len)
	Targets    int     `json:"targets"`      // next-token predictions scored
	Chunks     int     `json:"chunks"`       // chunks evaluated
	SeqLen     int     `json:"seq_len"`      // tokens per chunk
	MeanLoss   float64 `json:"mean_loss"`    // mean cross-entropy, nats
	Perplexity float64 `json:"perplexity"`   // exp(mean loss)
	Seconds    float64 `json:"seconds"`      // wall time
	TokensPerS float64 `json:"tokens_per_s"` // Tokens / Seconds
}

// Progress is called after each batch of chunks with the chunks done so far.
type Progress func(done, total int)

// Perplexity evaluates every chunk from position 0 and scores the T−1
// next-token targets of each (the protocol of stories260K.json). ovs, if not
// nil, replaces each layer's keys/values. batch chunks run together.
func Perplexity(ctx context.Context, m *model.Model, chunks [][]int, ovs []model.KVOverride, batch int, progress Progress) (Result, error) {
	if len(chunks) == 0 {
		return Result{}, fmt.Errorf("perplexity: no chunks")
	}
	if batch <= 0 {
		batch = 1
	}
	defer linalg.ThreadsFor(m.Config.Hidden)()
	T := len(chunks[0])
	V := m.Config.Vocab
	start := time.Now()
	var sum float64
	var count int
	for i := 0; i < len(chunks); i += batch {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		group := chunks[i:min(i+batch, len(chunks))]
		logits, err := m.Forward(group, ovs)
		if err != nil {
			return Result{}, fmt.Errorf("chunk %d: %w", i, err)
		}
		for s, seq := range group {
			targets := make([]int, T)
			copy(targets, seq[1:])
			targets[T-1] = -1
			l, n := model.NLL(logits[s*T*V:(s+1)*T*V], targets, V)
			sum += l
			count += n
		}
		if progress != nil {
			progress(min(i+batch, len(chunks)), len(chunks))
		}
	}
	secs := time.Since(start).Seconds()
	mean := sum / float64(count)
	return Result{
		Tokens: len(chunks) * T, Targets: count, Chunks: len(chunks), SeqLen: T,
		MeanLoss: mean, Perplexity: math.Exp(mean), Seconds: secs,
		TokensPerS: float64(len(chunks)*T) / secs,
	}, nil
}
