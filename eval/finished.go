package eval

import (
	"context"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
)

// Run describes the evaluation of a finished training run: its
// projections, ranks and cache settings, and the data to measure on.
type Run struct {
	Projections string           // the run's projections file (its ranks, per layer, are the run's)
	Cache       kvcache.Settings // the bi-branch cache of the report; Cache.Window = W
	Data        data.Source      // evaluation data; with no file only the synthetic model is evaluated
	Chunks      int              // evaluation chunks (0 = all of the file, or Data.Samples)
	Log         logrus.FieldLogger
}

// RunRow is one perplexity measurement of a finished run.
type RunRow struct {
	Variant    string       `json:"variant"`
	Window     int          `json:"window"`
	Perplexity float64      `json:"perplexity"`
	KRel       float64      `json:"k_rel_err,omitempty"`
	VRel       float64      `json:"v_rel_err,omitempty"`
	Layers     []LayerError `json:"layers,omitempty"`
}

// RunReport is what EvaluateRun measured.
type RunReport struct {
	Eval   []RunRow `json:"eval,omitempty"` // uncompressed, all-compressed, bi-branch W; none without data
	Memory []MemRow `json:"memory"`         // at 4096 tokens and the model's context length
}

// EvaluateRun measures a finished run on m, the run's base model: the
// memory table of its cache and, when there is data (a file, or samples of
// the synthetic model), the perplexity uncompressed, all-compressed and
// bi-branch at Cache.Window, with the per-layer reconstruction errors.
func EvaluateRun(ctx context.Context, m *model.Model, r Run) (*RunReport, error) {
	rep := &RunReport{}
	proj, err := checkpoints.ReadProjections(r.Projections)
	if err != nil {
		return nil, err
	}
	kRanks, vRanks := proj.Ranks()
	if rep.Memory, err = MemoryTable(m.Config, kRanks, vRanks, r.Cache, 4096, m.Config.ContextLength); err != nil {
		return nil, err
	}
	if r.Data.Path == "" && !m.Synthetic() {
		return rep, nil
	}
	chunks, err := r.Data.Chunks(m, r.Chunks)
	if err != nil {
		return nil, err
	}
	base, err := Perplexity(ctx, m, chunks, nil, 4, nil)
	if err != nil {
		return nil, err
	}
	rep.Eval = append(rep.Eval, RunRow{Variant: "uncompressed", Perplexity: base.Perplexity})
	for _, w := range []int{0, r.Cache.Window} {
		s := r.Cache
		s.Window = w
		res, errs, err := Compressed(ctx, m, chunks, proj, s, 4, nil)
		if err != nil {
			return nil, err
		}
		k, v := MeanErrors(errs)
		name := "all-compressed"
		if w > 0 {
			name = fmt.Sprintf("bi-branch %s W=%d", r.Cache.Mode, w)
		}
		rep.Eval = append(rep.Eval, RunRow{Variant: name, Window: w, Perplexity: res.Perplexity, KRel: k, VRel: v, Layers: errs})
		if r.Log != nil {
			r.Log.WithFields(logrus.Fields{"variant": name, "perplexity": fmt.Sprintf("%.4f", res.Perplexity)}).Info("evaluated")
		}
	}
	return rep, nil
}

// CompressedReport is the compressed cache measured against the
// uncompressed model on the same chunks.
type CompressedReport struct {
	KRanks      []int        // per layer
	VRanks      []int        // per layer
	Baseline    Result       // uncompressed
	Compressed  Result       // every layer's keys and values from the cache
	Errors      []LayerError // on the original model's attention inputs
	ChainErrors []LayerError // on the compressed model's own inputs
	Memory      []MemRow     // at 4096 tokens and the model's context length
}

// EvaluateCompressed evaluates the projections p on m under s: the
// baseline perplexity with the reconstruction errors on the original
// model's inputs, the compressed perplexity with the errors along the
// compressed chain, and the memory table. progress(phase) returns the
// progress callback of phase "baseline" or "compressed" and its finish
// function.
func EvaluateCompressed(ctx context.Context, m *model.Model, chunks [][]int, p *checkpoints.Projections, s kvcache.Settings, batch int,
	progress func(phase string) (Progress, func())) (*CompressedReport, error) {
	rep := &CompressedReport{}
	rep.KRanks, rep.VRanks = p.Ranks()
	var err error
	pr, done := progress("baseline")
	rep.Baseline, rep.Errors, err = Baseline(ctx, m, chunks, p, s, batch, pr)
	done()
	if err != nil {
		return nil, err
	}
	pr, done = progress("compressed")
	rep.Compressed, rep.ChainErrors, err = Compressed(ctx, m, chunks, p, s, batch, pr)
	done()
	if err != nil {
		return nil, err
	}
	if rep.Memory, err = MemoryTable(m.Config, rep.KRanks, rep.VRanks, s, 4096, m.Config.ContextLength); err != nil {
		return nil, err
	}
	return rep, nil
}
