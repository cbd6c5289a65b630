package main

import (
	"fmt"

	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/model"
)

// syntheticSeed is the seed of the embedded default model.
const syntheticSeed = 1

// Defaults used with the embedded synthetic model when the user gives no data.
const (
	syntheticSeqLen   = 128
	syntheticEvalSeqs = 16
	syntheticEvalSeed = 1001
)

// openModel opens the model at path, or builds the embedded synthetic model
// when path is empty.
func openModel(path string) (*model.Model, error) {
	if path == "" {
		return model.Synthetic(syntheticSeed)
	}
	return model.Open(path)
}

// isSynthetic reports whether m is the embedded default.
func isSynthetic(m *model.Model) bool { return m.Format == "synthetic" }

// dataFlags select a data source and its chunking.
type dataFlags struct {
	path   string
	format string
	seqLen int
	chunks int
}

// loadChunks reads the data (or samples the synthetic model's own data) and
// cuts it into chunks per the evaluation protocol.
func loadChunks(m *model.Model, d dataFlags, sampleSeed uint64, sampleN int) ([][]int, error) {
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
