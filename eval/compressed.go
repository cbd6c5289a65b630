package eval

import (
	"context"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
)

// LayerError is one layer's relative reconstruction errors on the evaluated
// tokens: ‖K − K̂‖/‖K‖ and ‖V − V̂‖/‖V‖.
type LayerError struct {
	Layer int     `json:"layer"`
	K     float64 `json:"k"`
	V     float64 `json:"v"`
}

// Compressed is the perplexity with every layer's keys and values
// reconstructed from the projections under s, plus per-layer errors.
func Compressed(ctx context.Context, m *model.Model, chunks [][]int, p *checkpoints.Projections, s kvcache.Settings, batch int, progress Progress) (Result, []LayerError, error) {
	return run(ctx, m, chunks, p, s, false, batch, progress)
}

// Baseline is the uncompressed perplexity; on the same pass it measures each
// layer's reconstruction errors on the original model's attention inputs
// (the reference's "rel err": K = X·Wkᵀ vs K̂ from the same X).
func Baseline(ctx context.Context, m *model.Model, chunks [][]int, p *checkpoints.Projections, s kvcache.Settings, batch int, progress Progress) (Result, []LayerError, error) {
	s.FP16Cache = false
	return run(ctx, m, chunks, p, s, true, batch, progress)
}

// run evaluates with compressors that replace (or, measuring, only measure)
// every layer's keys and values.
func run(ctx context.Context, m *model.Model, chunks [][]int, p *checkpoints.Projections, s kvcache.Settings, measure bool, batch int, progress Progress) (Result, []LayerError, error) {
	cs, err := kvcache.NewCompressors(m, p, s)
	if err != nil {
		return Result{}, nil, err
	}
	for _, c := range cs {
		c.MeasureOnly = measure
	}
	res, err := Perplexity(ctx, m, chunks, kvcache.Overrides(cs), batch, progress)
	if err != nil {
		return Result{}, nil, err
	}
	errs := make([]LayerError, len(cs))
	for i, c := range cs {
		k, v := c.RelErrors()
		errs[i] = LayerError{Layer: i, K: k, V: v}
	}
	return res, errs, nil
}

// MeanErrors averages per-layer errors (the reference table's "rel err").
func MeanErrors(errs []LayerError) (k, v float64) {
	for _, e := range errs {
		k += e.K
		v += e.V
	}
	n := float64(len(errs))
	return k / n, v / n
}
