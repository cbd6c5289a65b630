package main

import (
	"flag"
	"fmt"

	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// Defaults used with the embedded synthetic model when the user gives no data.
const (
	syntheticSeqLen   = 128
	syntheticEvalSeqs = 16
	syntheticEvalSeed = 1001
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
func (c *cacheFlags) settings(mc model.Config, kRank, vRank int) (eval.Settings, error) {
	return settingsFrom(mc, kRank, vRank, c.window, c.windowMode, c.kBits, c.vBits, c.kQuant, c.quantWindow, c.quantZero)
}

// loadChunks reads the data (or samples the synthetic model's own data) and
// cuts it into chunks per the evaluation protocol.
func loadChunks(m *model.Model, d dataFlags, sampleSeed uint64, sampleN int) ([][]int, error) {
	if !validFormats[d.format] {
		return nil, fmt.Errorf("%w: --data-format %q: want auto, text, ids or bin", errUsage, d.format)
	}
	if d.seqLen < 2 {
		return nil, fmt.Errorf("%w: --seq-len %d: must be at least 2", errUsage, d.seqLen)
	}
	if d.chunks < 0 {
		return nil, fmt.Errorf("%w: --chunks %d: must be ≥ 0", errUsage, d.chunks)
	}
	if d.path == "" {
		if !isSynthetic(m) {
			return nil, fmt.Errorf("%w: --data is required with --model", errUsage)
		}
		n := sampleN
		if d.chunks > 0 {
			n = d.chunks
		}
		return m.SampleTokens(n, d.seqLen, 1, sampleSeed)
	}
	ids, err := data.Load(d.path, data.Format(d.format), encoderOf(m))
	if err != nil {
		return nil, err
	}
	if err := data.CheckVocab(ids, m.Config.Vocab); err != nil {
		return nil, fmt.Errorf("data %s: %w", d.path, err)
	}
	chunks, err := data.Chunks(ids, d.seqLen, d.chunks)
	if err != nil {
		return nil, fmt.Errorf("data %s: %w", d.path, err)
	}
	return chunks, nil
}

// validFormats are the --data-format values.
var validFormats = map[string]bool{"": true, "auto": true, "text": true, "ids": true, "bin": true}

// encoderOf returns the model's tokenizer as a data.Encoder, or nil.
func encoderOf(m *model.Model) data.Encoder {
	if m.Tokenizer == nil {
		return nil
	}
	return m.Tokenizer
}

// describe names the model for output, flagging the synthetic default.
func describe(m *model.Model) string {
	if isSynthetic(m) {
		return fmt.Sprintf("%s — SYNTHETIC embedded default (random weights, not a trained model)", m.Path)
	}
	return m.Path
}
