package eval

import (
	"context"
	"fmt"
	"math"

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
