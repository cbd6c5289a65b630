package eval

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// Comparison is the experiment of `cskv compare` (docs/METHOD.md §4):
// projections trained once at full precision and quantised only at
// evaluation (post-training quantisation, PTQ) against projections trained
// quantisation-aware at each bit width (QAT), both evaluated with the
// bi-branch cache at that width.
type Comparison struct {
	Train  train.Config // the recipe; KBits, VBits, Out and Force are set per run
	Bits   []int        // bit widths, each in {2, 3, 4, 8}
	Dir    string       // the runs go to Dir/fp and Dir/qatB
	Data   data.Source  // evaluation data
	Chunks int          // evaluation chunks (0 = all of the file, or Data.Samples)
	Window int          // bi-branch window W of the evaluation cache (Train's rule and quantisation groups)
	Env    train.Env    // passed to every train.Run
	Log    logrus.FieldLogger
}

// CompareRow is one measurement of a Comparison.
type CompareRow struct {
	Bits       int     `json:"bits"`
	Method     string  `json:"method"` // "ptq" (full-precision training, quantised at evaluation) or "qat"
	Perplexity float64 `json:"perplexity"`
	Baseline   float64 `json:"baseline_perplexity"`
}

// RunConfig is the training configuration of the run at bits b (16: the
// full-precision run) in dir.
func (c Comparison) RunConfig(b int) train.Config {
	cfg := c.Train
	cfg.KBits, cfg.VBits = b, b
	name := "fp"
	if b != 16 {
		name = fmt.Sprintf("qat%d", b)
	}
	cfg.Out, cfg.Force = filepath.Join(c.Dir, name), true
	return cfg
}

// Compare runs the comparison on m, the base model of c.Train: the
// full-precision run, the uncompressed perplexity, then per bit width the
// PTQ evaluation, the QAT run and its evaluation. It returns two rows per
// width, PTQ then QAT.
func Compare(ctx context.Context, m *model.Model, c Comparison) ([]CompareRow, error) {
	trainAt := func(b int) (string, error) {
		cfg := c.RunConfig(b)
		if c.Log != nil {
			c.Log.WithFields(logrus.Fields{"run": filepath.Base(cfg.Out)}).Info("training")
		}
		res, err := train.Run(ctx, cfg, c.Env)
		if err != nil {
			return "", err
		}
		return res.Projections, nil
	}
	evalAt := func(chunks [][]int, path string, b int) (float64, error) {
		p, err := checkpoints.ReadProjections(path)
		if err != nil {
			return 0, err
		}
		cache := c.Train.Cache(c.Window)
		cache.KBits, cache.VBits = b, b
		s, err := cache.Settings(m.Config, p.Layers[0].KRank, p.Layers[0].VRank)
		if err != nil {
			return 0, err
		}
		r, _, err := Compressed(ctx, m, chunks, p, s, 4, nil)
		return r.Perplexity, err
	}
	fp, err := trainAt(16)
	if err != nil {
		return nil, err
	}
	chunks, base, err := uncompressed(ctx, m, c.Data, c.Chunks)
	if err != nil {
		return nil, err
	}
	var rows []CompareRow
	for _, b := range c.Bits {
		ptq, err := evalAt(chunks, fp, b)
		if err != nil {
			return nil, err
		}
		qp, err := trainAt(b)
		if err != nil {
			return nil, err
		}
		qat, err := evalAt(chunks, qp, b)
		if err != nil {
			return nil, err
		}
		rows = append(rows, CompareRow{b, "ptq", ptq, base.Perplexity}, CompareRow{b, "qat", qat, base.Perplexity})
	}
	return rows, nil
}
