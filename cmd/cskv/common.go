package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// openModel opens the model at path, or the embedded synthetic model for "".
func openModel(path string) (*model.Model, error) { return train.OpenModel(path) }

// streamMemoryFlag registers --stream-memory (GiB) into cfg.StreamMemory.
func streamMemoryFlag(fs *flag.FlagSet, cfg *train.Config) {
	fs.Var(gib{&cfg.StreamMemory}, "stream-memory", "GiB the residual streams of the calibration and held-out sequences may take in memory; "+
		"above it they are spilled to files in the run directory and read back in chunks, with the same results "+
		"(0 = a quarter of the machine's memory)")
}

// gib is a flag.Value of bytes given and printed in GiB (so that
// DIR/config.yaml reads back).
type gib struct{ bytes *int64 }

func (g gib) String() string {
	if g.bytes == nil {
		return "0"
	}
	return strconv.FormatFloat(float64(*g.bytes)/(1<<30), 'g', -1, 64)
}

func (g gib) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v >= 0) || math.IsInf(v, 0) {
		return fmt.Errorf("want GiB ≥ 0")
	}
	*g.bytes = max(int64(v*(1<<30)), min(1, int64(math.Ceil(v)))) // a positive value stays positive
	return nil
}

// modelFlag registers --model.
func modelFlag(fs *flag.FlagSet) *string {
	return fs.String("model", "", "model: GGUF file or Hugging Face directory (default: the embedded synthetic model)")
}

// dataFlags select a data source and its chunking.
type dataFlags struct {
	path   string
	format data.Format
	seqLen int
	chunks int
}

// register adds --data, --data-format, --seq-len and the chunk-count flag
// (named chunksFlag, e.g. "chunks" or "calib-chunks").
func (d *dataFlags) register(fs *flag.FlagSet, what, chunksFlag string, chunks int, chunksUsage string) {
	d.format = data.FormatAuto
	fs.StringVar(&d.path, "data", "", what+" data: text, .ids (whitespace-separated ids) or llm.c .bin (default with the synthetic model: sampled from it)")
	fs.Var(&d.format, "data-format", "data format: auto, text, ids or bin")
	fs.IntVar(&d.seqLen, "seq-len", 512, "tokens per sequence (the synthetic default uses 128 unless set)")
	fs.IntVar(&d.chunks, chunksFlag, chunks, chunksUsage)
}

// source checks the flags and returns the data source they name; seed and
// samples are those of the synthetic model's sampled data (package data).
func (d *dataFlags) source(seed uint64, samples int) (data.Source, error) {
	if d.seqLen < 2 {
		return data.Source{}, fmt.Errorf("%w: --seq-len %d: must be at least 2", errUsage, d.seqLen)
	}
	if d.chunks < 0 {
		return data.Source{}, fmt.Errorf("%w: --chunks %d: must be ≥ 0", errUsage, d.chunks)
	}
	return data.Source{Path: d.path, Format: d.format, SeqLen: d.seqLen, Seed: seed, Samples: samples}, nil
}

// open opens --model (m; warning when it runs slowly on this build), fills
// in the synthetic model's sequence length when --seq-len is unset, and
// cuts the data into chunks per the evaluation protocol (or samples the
// synthetic model's own: seed, samples).
func (d *dataFlags) open(fs *flag.FlagSet, log *logrus.Logger, modelPath string, seed uint64, samples int) (*model.Model, [][]int, error) {
	m, err := openWarn(log, modelPath)
	if err != nil {
		return nil, nil, err
	}
	syntheticDefaults(fs, modelPath, &d.seqLen, nil)
	log.WithField("model", describe(m)).Info("model loaded")
	src, err := d.source(seed, samples)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	chunks, err := src.Chunks(m, d.chunks)
	if errors.Is(err, data.ErrNeedFile) {
		err = fmt.Errorf("%w: %v", errUsage, err)
	}
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, chunks, nil
}

// syntheticDefaults gives the flags the user left unset the synthetic
// model's data defaults (package data) when modelPath is "" (the embedded
// model); a nil pointer is a flag the command does not patch.
func syntheticDefaults(fs *flag.FlagSet, modelPath string, seqLen, calibChunks *int) {
	if modelPath != "" {
		return
	}
	if seqLen != nil && !flagSet(fs, "seq-len") {
		*seqLen = data.SyntheticSeqLen
	}
	if calibChunks != nil && !flagSet(fs, "calib-chunks") {
		*calibChunks = data.SyntheticCalibChunks
	}
}

// cacheFlags choose the projections (--projections, --force) and the
// compressed cache's window and quantisation of eval and generate.
type cacheFlags struct {
	train.Cache
	path  string // --projections
	force bool   // --force: projections made for another base model
}

func (c *cacheFlags) register(fs *flag.FlagSet, projUsage, forceUsage string) {
	c.Mode, c.KQuant, c.QuantZero = kv.WindowBlock, train.KeyPerChannel, train.ZeroFree
	fs.StringVar(&c.path, "projections", "", projUsage)
	fs.BoolVar(&c.force, "force", false, forceUsage)
	fs.IntVar(&c.Window, "window", 32, "with --projections: bi-branch window W, tokens kept at full precision")
	fs.Var(&c.Mode, "window-mode", "with --projections: block (reference rule) or sliding (last W tokens)")
	fs.IntVar(&c.KBits, "k-bits", 16, "with --projections: key feature bits (2, 3, 4, 8; 16 = off)")
	fs.IntVar(&c.VBits, "v-bits", 16, "with --projections: value feature bits (2, 3, 4, 8; 16 = off)")
	fs.Var(&c.KQuant, "k-quant", "key quantisation groups: channel (per channel over --quant-window tokens) or token")
	fs.IntVar(&c.QuantWindow, "quant-window", 32, "tokens per per-channel key group")
	fs.Var(&c.QuantZero, "quant-zero", "zero point: free or clamp")
}

// projections reads --projections for m (train.ProjectionsFor, with the row
// layout of a foreign file) and returns them with the cache settings at
// their ranks, warning when they were trained with other quantisation
// settings.
func (c *cacheFlags) projections(m *model.Model, layout string, log *logrus.Logger) (*checkpoints.Projections, kvcache.Settings, error) {
	proj, err := train.ProjectionsFor(m, c.path, layout, c.force, log)
	if err != nil {
		return nil, kvcache.Settings{}, err
	}
	s, err := c.Settings(m.Config, proj.Layers[0].KRank, proj.Layers[0].VRank)
	if err != nil {
		return nil, kvcache.Settings{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	eval.WarnQuantMismatch(proj.Meta, s, log)
	return proj, s, nil
}

// reportFlags choose the evaluation of a finished run's report (train,
// init, merge) or of compare's runs.
type reportFlags struct {
	data   string
	chunks int
	window int
	json   bool
}

func (r *reportFlags) register(fs *flag.FlagSet, dataUsage, jsonUsage string) {
	fs.StringVar(&r.data, "eval-data", "", dataUsage)
	fs.IntVar(&r.chunks, "eval-chunks", 64, "evaluation chunks for the report")
	fs.IntVar(&r.window, "window", 32, "bi-branch window W for the report's evaluation")
	fs.BoolVar(&r.json, "json", false, jsonUsage)
}

// source checks the flags against the run's configuration cfg and returns
// the evaluation data (the synthetic model's samples by default).
func (r *reportFlags) source(cfg train.Config) (data.Source, error) {
	if err := cfg.Cache(r.window).Check(); err != nil {
		return data.Source{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	src, err := (&dataFlags{path: r.data, format: data.FormatAuto, seqLen: cfg.SeqLen}).source(data.SyntheticEvalSeed, data.SyntheticEvalChunks)
	if err != nil {
		return data.Source{}, err
	}
	if r.chunks < 0 {
		return data.Source{}, fmt.Errorf("%w: --eval-chunks %d: must be ≥ 0", errUsage, r.chunks)
	}
	return src, nil
}

// print prints the report of a finished run: one JSON object with --json,
// else the tables.
func (r *reportFlags) print(rep *eval.Report) error {
	if r.json {
		return json.NewEncoder(os.Stdout).Encode(rep)
	}
	printReport(rep)
	return nil
}

// describe names the model for output, flagging the synthetic default.
func describe(m *model.Model) string { return describeModel(m.Path, m.Synthetic()) }

func describeModel(path string, synthetic bool) string {
	if synthetic {
		return fmt.Sprintf("%s — SYNTHETIC embedded default (random weights, not a trained model)", path)
	}
	return path
}
