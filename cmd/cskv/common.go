package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// openModel opens the model at path, or the embedded synthetic model for "".
func openModel(path string) (*model.Model, error) { return train.OpenModel(path) }

// isSynthetic reports whether m is the embedded default.
func isSynthetic(m *model.Model) bool { return m.Synthetic() }

// modelFlag registers --model.
func modelFlag(fs *flag.FlagSet) *string {
	return fs.String("model", "", "model: GGUF file or Hugging Face directory (default: the embedded synthetic model)")
}

// dataFlags select a data source and its chunking.
type dataFlags struct {
	path   string
	format string
	seqLen int
	chunks int
}

// register adds --data, --data-format, --seq-len and the chunk-count flag
// (named chunksFlag, e.g. "chunks" or "calib-chunks").
func (d *dataFlags) register(fs *flag.FlagSet, what, chunksFlag string, chunks int, chunksUsage string) {
	fs.StringVar(&d.path, "data", "", what+" data: text, .ids (whitespace-separated ids) or llm.c .bin (default with the synthetic model: sampled from it)")
	fs.StringVar(&d.format, "data-format", "auto", "data format: auto, text, ids or bin")
	fs.IntVar(&d.seqLen, "seq-len", 512, "tokens per sequence (the synthetic default uses 128 unless set)")
	fs.IntVar(&d.chunks, chunksFlag, chunks, chunksUsage)
}

// cacheFlags choose the compressed cache's window and quantisation.
type cacheFlags struct {
	window      int
	windowMode  string
	kBits       int
	vBits       int
	kQuant      string
	quantWindow int
	quantZero   string
}

func (c *cacheFlags) register(fs *flag.FlagSet, window int) {
	fs.IntVar(&c.window, "window", window, "with --projections: bi-branch window W, tokens kept at full precision")
	fs.StringVar(&c.windowMode, "window-mode", "block", "with --projections: block (reference rule) or sliding (last W tokens)")
	fs.IntVar(&c.kBits, "k-bits", 16, "with --projections: key feature bits (2, 3, 4, 8; 16 = off)")
	fs.IntVar(&c.vBits, "v-bits", 16, "with --projections: value feature bits (2, 3, 4, 8; 16 = off)")
	fs.StringVar(&c.kQuant, "k-quant", "channel", "key quantisation groups: channel (per channel over --quant-window tokens) or token")
	fs.IntVar(&c.quantWindow, "quant-window", 32, "tokens per per-channel key group")
	fs.StringVar(&c.quantZero, "quant-zero", "free", "zero point: free or clamp")
}

// settings builds the evaluation settings for ranks kRank, vRank.
func (c *cacheFlags) settings(mc model.Config, kRank, vRank int) (kvcache.Settings, error) {
	return settingsFrom(mc, kRank, vRank, c.window, c.windowMode, c.kBits, c.vBits, c.kQuant, c.quantWindow, c.quantZero)
}

// source checks the flags and returns the data source they name; seed and
// samples are those of the synthetic model's sampled data (package data).
func (d *dataFlags) source(seed uint64, samples int) (data.Source, error) {
	if !data.Format(d.format).Valid() {
		return data.Source{}, fmt.Errorf("%w: --data-format %q: want auto, text, ids or bin", errUsage, d.format)
	}
	if d.seqLen < 2 {
		return data.Source{}, fmt.Errorf("%w: --seq-len %d: must be at least 2", errUsage, d.seqLen)
	}
	if d.chunks < 0 {
		return data.Source{}, fmt.Errorf("%w: --chunks %d: must be ≥ 0", errUsage, d.chunks)
	}
	return data.Source{Path: d.path, Format: data.Format(d.format), SeqLen: d.seqLen, Seed: seed, Samples: samples}, nil
}

// loadChunks reads the data (or samples the synthetic model's own data) and
// cuts it into chunks per the evaluation protocol.
func loadChunks(m *model.Model, d dataFlags, sampleSeed uint64, sampleN int) ([][]int, error) {
	src, err := d.source(sampleSeed, sampleN)
	if err != nil {
		return nil, err
	}
	chunks, err := src.Chunks(m, d.chunks)
	if errors.Is(err, data.ErrNeedFile) {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return chunks, err
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

// describe names the model for output, flagging the synthetic default.
func describe(m *model.Model) string {
	if isSynthetic(m) {
		return fmt.Sprintf("%s — SYNTHETIC embedded default (random weights, not a trained model)", m.Path)
	}
	return m.Path
}
