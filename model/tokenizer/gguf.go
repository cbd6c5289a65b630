package tokenizer

import (
	"fmt"
	"sort"
	"strings"

	"github.com/cskv/cskv/model/gguf"
)

// GGUF metadata keys of the tokenizer.
const (
	keyModel          = "tokenizer.ggml.model"
	keyTokens         = "tokenizer.ggml.tokens"
	keyScores         = "tokenizer.ggml.scores"
	keyTypes          = "tokenizer.ggml.token_type"
	keyMerges         = "tokenizer.ggml.merges"
	keyBOS            = "tokenizer.ggml.bos_token_id"
	keyEOS            = "tokenizer.ggml.eos_token_id"
	keyUnk            = "tokenizer.ggml.unknown_token_id"
	keyAddSpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyPre            = "tokenizer.ggml.pre"
)

// ggufBuilders maps tokenizer.ggml.model to the constructor of its tokenizer.
var ggufBuilders = map[string]func(f *gguf.File) (Tokenizer, error){
	"llama": spmFromGGUF,
	"gpt2":  byteBPEFromGGUF,
}

// FromGGUF builds the tokenizer described by a GGUF file's tokenizer.ggml.*
// metadata: "llama" gives an *SPM, "gpt2" a byte-level BPE (*HF).
func FromGGUF(f *gguf.File) (Tokenizer, error) {
	name, ok := f.String(keyModel)
	if !ok {
		return nil, fmt.Errorf("gguf tokenizer: missing string key %s", keyModel)
	}
	build, ok := ggufBuilders[name]
	if !ok {
		known := make([]string, 0, len(ggufBuilders))
		for k := range ggufBuilders {
			known = append(known, k)
		}
		sort.Strings(known)
		return nil, fmt.Errorf("gguf tokenizer: unsupported %s %q (supported: %s)", keyModel, name, strings.Join(known, ", "))
	}
	t, err := build(f)
	if err != nil {
		return nil, fmt.Errorf("gguf tokenizer %q: %w", name, err)
	}
	return t, nil
}

// ggufID reads an optional token-id key: def when absent, -1 when the
// stored value lies outside the vocabulary (llama.cpp writes 0xFFFFFFFF
// for "none").
func ggufID(f *gguf.File, key string, def, n int) int {
	if _, present := f.Get(key); !present {
		if def >= n {
			return -1
		}
		return def
	}
	v, ok := f.Uint(key)
	if !ok || v >= uint64(n) {
		return -1
	}
	return int(v)
}

func spmFromGGUF(f *gguf.File) (Tokenizer, error) {
	tokens, ok := f.Strings(keyTokens)
	if !ok {
		return nil, fmt.Errorf("missing string array %s", keyTokens)
	}
	n := len(tokens)
	scores, ok := f.Float32s(keyScores)
	if !ok {
		return nil, fmt.Errorf("missing float array %s", keyScores)
	}
	types, ok := f.Int32s(keyTypes)
	if !ok {
		if _, present := f.Get(keyTypes); present {
			return nil, fmt.Errorf("%s is not an int32 array", keyTypes)
		}
		types = make([]int32, n) // undefined: all pieces mergeable, bytes found by text
	}
	t, err := NewSPM(tokens, scores, types, ggufID(f, keyBOS, 1, n), ggufID(f, keyEOS, 2, n), ggufID(f, keyUnk, 0, n))
	if err != nil {
		return nil, err
	}
	if v, present := f.Get(keyAddSpacePrefix); present {
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%s is %T, want bool", keyAddSpacePrefix, v)
		}
		t.SetAddSpacePrefix(b)
	}
	return t, nil
}
