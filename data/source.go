package data

import (
	"errors"
	"fmt"
)

// formats is the table of format names a user may give (--data-format).
// The zero Format is not among them; Load reads it as FormatAuto.
var formats = map[Format]bool{FormatAuto: true, FormatText: true, FormatIDs: true, FormatBin: true}

// Valid reports whether f is one of the named formats: auto, text, ids or
// bin.
func (f Format) Valid() bool { return formats[f] }

// String is the format's name, as --data-format spells it.
func (f Format) String() string { return string(f) }

// Set implements flag.Value for --data-format: one of the named formats.
func (f *Format) Set(s string) error {
	if !Format(s).Valid() {
		return fmt.Errorf("want auto, text, ids or bin")
	}
	*f = Format(s)
	return nil
}

// Model is what a Source needs of the model it feeds: its tokenizer (for
// text), its vocabulary (to check ids against) and, for the embedded
// synthetic model, samples of its own.
type Model interface {
	TextEncoder() Encoder // nil when the model has no tokenizer
	VocabSize() int
	Synthetic() bool
	SampleTokens(n, T int, temperature float64, seed uint64) ([][]int, error)
}

// ErrNeedFile reports a Source without a file for a model that cannot
// sample its own data (every model but the synthetic one).
var ErrNeedFile = errors.New("--data is required with --model")

// Source is one calibration or evaluation data source, cut into chunks of
// SeqLen tokens by the evaluation protocol (see Chunks): a file, or, with no
// file and the synthetic model, sequences sampled from the model itself.
type Source struct {
	Path    string // text, whitespace-separated ids or llm.c .bin; "" = sampled
	Format  Format // how Path stores its content; "" or FormatAuto: by extension
	SeqLen  int    // T, tokens per chunk
	Seed    uint64 // seed of the sampled sequences
	Samples int    // sequences sampled when every chunk is asked for (n = 0)
}

// Chunks returns the first n chunks of the source (n = 0: every chunk of the
// file, or Samples sampled sequences), each of SeqLen tokens whose ids are
// checked against m's vocabulary.
func (s Source) Chunks(m Model, n int) ([][]int, error) {
	if s.Path == "" {
		if !m.Synthetic() {
			return nil, ErrNeedFile
		}
		if n == 0 {
			n = s.Samples
		}
		return m.SampleTokens(n, s.SeqLen, 1, s.Seed)
	}
	ids, err := Load(s.Path, s.Format, m.TextEncoder())
	if err != nil {
		return nil, err
	}
	if err := CheckVocab(ids, m.VocabSize()); err != nil {
		return nil, fmt.Errorf("data %s: %w", s.Path, err)
	}
	chunks, err := Chunks(ids, s.SeqLen, n)
	if err != nil {
		return nil, fmt.Errorf("data %s: %w", s.Path, err)
	}
	return chunks, nil
}

// Defaults of the embedded synthetic model's data, used wherever the user
// names no data and no sequence length: one place for every command and
// for train.
const (
	SyntheticSeqLen      = 128  // tokens per sequence
	SyntheticCalibChunks = 32   // calibration sequences
	SyntheticCalibSeed   = 2024 // seed of the sampled calibration sequences
	SyntheticEvalChunks  = 16   // evaluation sequences
	SyntheticEvalSeed    = 1001 // seed of the sampled evaluation sequences
)
