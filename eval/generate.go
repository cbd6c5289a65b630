package eval

import (
	"context"
	"fmt"
	"math"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
)

// Greedy feeds the prompt and returns n greedily chosen next tokens, with
// the logits of every step (one row per token fed).
func Greedy(ctx context.Context, m *model.Model, prompt []int, n int, caches []model.LayerCache) ([]int, [][]float32, error) {
	if len(prompt) == 0 {
		return nil, nil, fmt.Errorf("empty prompt")
	}
	d, err := m.NewDecoder(len(prompt)+n, caches)
	if err != nil {
		return nil, nil, err
	}
	var all [][]float32
	var logits []float32
	for _, t := range prompt {
		if logits, err = d.Step(t); err != nil {
			return nil, nil, err
		}
		all = append(all, logits)
	}
	out := make([]int, 0, n)
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return out, all, err
		}
		next := model.Argmax(logits)
		out = append(out, next)
		if i+1 < n {
			if logits, err = d.Step(next); err != nil {
				return nil, nil, err
			}
			all = append(all, logits)
		}
	}
	return out, all, nil
}

// ParallelDiff runs the tokens through the parallel forward with the
// overrides ovs and returns the largest absolute difference from logits, the
// step-by-step logits of the same tokens (one row per token fed, as Greedy
// returns them): how far decoding with a cache is from the parallel
// evaluation it must equal.
func ParallelDiff(m *model.Model, tokens []int, logits [][]float32, ovs []model.KVOverride) (float64, error) {
	full, err := m.Forward([][]int{tokens}, ovs)
	if err != nil {
		return 0, err
	}
	V := m.Config.Vocab
	var maxDiff float64
	for p, row := range logits {
		for i, x := range row {
			maxDiff = max(maxDiff, math.Abs(float64(x-full[p*V+i])))
		}
	}
	return maxDiff, nil
}

// Generation is a greedy decode with the real bi-branch compressed cache
// (GenerateCompressed).
type Generation struct {
	Tokens    []int            // the n generated tokens
	Layers    []*kvcache.Layer // every layer's real cache after the decode
	Positions int              // tokens fed (one logits row each)
	MaxDiff   float64          // with verify: the largest |logit(real cache) − logit(parallel fake-quant)|
}

// GenerateCompressed decodes n tokens after the prompt greedily with the real
// bi-branch cache of projections p under s. With verify it runs the fed
// tokens through the parallel forward with the fake-quantised compressors
// (fp16 features, as the real cache stores them) and records the largest
// logit difference: the two computations must agree (exactly, in linalg's
// exact mode).
func GenerateCompressed(ctx context.Context, m *model.Model, prompt []int, n int, p *checkpoints.Projections, s kvcache.Settings, verify bool) (*Generation, error) {
	caches, layers, err := kvcache.NewCaches(m, p, s)
	if err != nil {
		return nil, err
	}
	out, logits, err := Greedy(ctx, m, prompt, n, caches)
	if err != nil {
		return nil, err
	}
	g := &Generation{Tokens: out, Layers: layers, Positions: len(logits)}
	if verify {
		s.FP16Cache = true
		cs, err := kvcache.NewCompressors(m, p, s)
		if err != nil {
			return nil, err
		}
		fed := append(append([]int(nil), prompt...), out...)[:len(logits)]
		if g.MaxDiff, err = ParallelDiff(m, fed, logits, kvcache.Overrides(cs)); err != nil {
			return nil, err
		}
	}
	return g, nil
}
