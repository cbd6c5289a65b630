package model

import "github.com/cskv/cskv/data"

// TextEncoder returns the tokenizer as package data uses it, or nil when the
// model has none (a typed nil would not compare equal to nil).
func (m *Model) TextEncoder() data.Encoder {
	if m.Tokenizer == nil {
		return nil
	}
	return m.Tokenizer
}

// VocabSize is the vocabulary size, Config.Vocab.
func (m *Model) VocabSize() int { return m.Config.Vocab }

// A model is a data source's model.
var _ data.Model = (*Model)(nil)
