package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/cskv/cskv/model/gguf"
)

const keyAddBOS = "tokenizer.ggml.add_bos_token"
const keyAddEOS = "tokenizer.ggml.add_eos_token"

// ggufPreTokenizers maps tokenizer.ggml.pre to the HF pre-tokenizer that
// the byte-level models of that family declare in their tokenizer.json.
var ggufPreTokenizers = map[string]string{
	"gpt2":             `{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}`,
	"llama-bpe":        splitThenByteLevel(cl100kPattern),
	"llama3":           splitThenByteLevel(cl100kPattern),
	"llama-v3":         splitThenByteLevel(cl100kPattern),
	"smaug-bpe":        splitThenByteLevel(cl100kPattern),
	"dbrx":             splitThenByteLevel(cl100kPattern),
	"qwen2":            splitThenByteLevel(qwen2Pattern),
	"deepseek-r1-qwen": splitThenByteLevel(qwen2Pattern),
	"smollm":           `{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}]}`,
}

func splitThenByteLevel(pattern string) string {
	p, _ := json.Marshal(pattern)
	return `{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":` + string(p) +
		`},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]}`
}

// byteBPEFromGGUF builds the byte-level BPE of a GGUF file with
// tokenizer.ggml.model = "gpt2". The split pattern comes from
// tokenizer.ggml.pre (GPT-2's when the key is absent). Control and
// user-defined tokens are matched in the text as added tokens (HF's rule);
// control tokens count as special.
func byteBPEFromGGUF(f *gguf.File) (Tokenizer, error) {
	tokens, ok := f.Strings(keyTokens)
	if !ok {
		return nil, fmt.Errorf("missing string array %s", keyTokens)
	}
	n := len(tokens)
	types, ok := f.Int32s(keyTypes)
	if !ok {
		types = make([]int32, n)
	}
	if len(types) != n {
		return nil, fmt.Errorf("%d tokens but %d token types", n, len(types))
	}
	mergeStrs, ok := f.Strings(keyMerges)
	if !ok {
		return nil, fmt.Errorf("missing string array %s", keyMerges)
	}
	preName := "gpt2"
	if v, present := f.Get(keyPre); present {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%s is %T, want string", keyPre, v)
		}
		preName = s
	}
	preJSON, ok := ggufPreTokenizers[preName]
	if !ok {
		return nil, fmt.Errorf("unsupported %s %q", keyPre, preName)
	}
	vocab := make(map[string]int32, n)
	var added []addedToken
	for i, tok := range tokens {
		if _, dup := vocab[tok]; dup {
			return nil, fmt.Errorf("token %d %q appears twice", i, tok)
		}
		vocab[tok] = int32(i)
		if (types[i] == TypeControl || types[i] == TypeUserDefined) && tok != "" {
			added = append(added, addedToken{ID: i, Content: tok, Special: types[i] == TypeControl})
		}
	}
	merges := make([][2]string, len(mergeStrs))
	for i, s := range mergeStrs {
		a, b, ok := strings.Cut(s, " ")
		if !ok || strings.Contains(b, " ") {
			return nil, fmt.Errorf("merge %d %q: want two tokens separated by one space", i, s)
		}
		merges[i] = [2]string{a, b}
	}
	model, err := newBPEModel(vocab, merges, "", false, false, false, "", "")
	if err != nil {
		return nil, err
	}
	t := &HF{model: model}
	if t.pre, err = parsePreTokenizer(json.RawMessage(preJSON)); err != nil {
		return nil, err
	}
	if t.dec, err = parseDecoder(json.RawMessage(`{"type":"ByteLevel"}`)); err != nil {
		return nil, err
	}
	if err := t.setAdded(added); err != nil {
		return nil, err
	}
	t.bos = ggufID(f, keyBOS, -1, n)
	t.eos = ggufID(f, keyEOS, -1, n)
	for _, fl := range []struct {
		key string
		dst *bool
	}{{keyAddBOS, &t.addBOS}, {keyAddEOS, &t.addEOS}} {
		if v, present := f.Get(fl.key); present {
			b, ok := v.(bool)
			if !ok {
				return nil, fmt.Errorf("%s is %T, want bool", fl.key, v)
			}
			*fl.dst = b
		}
	}
	return t, nil
}
