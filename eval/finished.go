package eval

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/atomicfile"
	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
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
	chunks, base, err := uncompressed(ctx, m, r.Data, r.Chunks)
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

// uncompressed cuts n chunks of src for m and measures m's own perplexity
// on them: the baseline every compressed evaluation of a run is read against.
func uncompressed(ctx context.Context, m *model.Model, src data.Source, n int) ([][]int, Result, error) {
	chunks, err := src.Chunks(m, n)
	if err != nil {
		return nil, Result{}, err
	}
	base, err := Perplexity(ctx, m, chunks, nil, 4, nil)
	return chunks, base, err
}

// Report is the report of a finished run (cskv train, init and merge;
// DIR/report.json): the run, then its evaluation (EvaluateRun).
type Report struct {
	Model       string            `json:"model"`
	Synthetic   bool              `json:"synthetic"`
	Projections string            `json:"projections"`
	Seconds     float64           `json:"seconds"`
	PeakRSS     int64             `json:"peak_rss_bytes"`
	Layers      []train.LayerInfo `json:"layers"`
	RunReport
}

// EvaluateResult evaluates a finished run for its report: it reopens the
// run's base model and measures the run's projections (EvaluateRun) on
// chunks chunks of src with the run's cache rule and quantisation at
// window W.
func EvaluateResult(ctx context.Context, res *train.Result, src data.Source, chunks, window int, log logrus.FieldLogger) (*Report, error) {
	// The run closed its model: collected first, its memory holds the
	// reopened one instead of lying beside it (a 1-layer 70B-shaped run
	// peaked at 17.0 GiB here without, 14.6 in the training).
	runtime.GC()
	m, err := train.OpenModel(res.Config.Model)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	kRank, vRank := res.Layers[0].KRank, res.Layers[0].VRank
	cache, err := res.Config.Cache(window).Settings(m.Config, kRank, vRank)
	if err != nil {
		return nil, err
	}
	ev, err := EvaluateRun(ctx, m, Run{Projections: res.Projections, Cache: cache, Data: src, Chunks: chunks, Log: log})
	if err != nil {
		return nil, err
	}
	return &Report{Model: m.Path, Synthetic: m.Synthetic(), Projections: res.Projections, Seconds: res.Seconds,
		PeakRSS: res.PeakRSS, Layers: res.Layers, RunReport: *ev}, nil
}

// Write writes the report as indented JSON to path (DIR/report.json).
func (r *Report) Write(path string) error {
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(raw, '\n'))
}

// WarnQuantMismatch warns when projections trained with QAT settings (their
// metadata meta) are evaluated with other quantisation settings s.
func WarnQuantMismatch(meta map[string]string, s kvcache.Settings, log logrus.FieldLogger) {
	want := map[string]string{"k_bits": fmt.Sprint(s.K.Bits), "v_bits": fmt.Sprint(s.V.Bits)}
	for k, v := range want {
		if got, ok := meta[k]; ok && got != "16" && got != v {
			log.WithFields(logrus.Fields{"setting": k, "file": got, "requested": v}).Warn("projections were trained with other quantisation settings than requested for evaluation")
		}
	}
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
