package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// ToHFJSON writes t as a Hugging Face tokenizer.json: a BPE model with
// byte_fallback and fuse_unk, the whole vocabulary (ids unchanged), merges
// derived from the scores, the legacy Llama normalizer Prepend("▁") +
// Replace(" " → "▁") (only Replace when the dummy prefix is off), no
// pre-tokenizer, a TemplateProcessing "<s> $A" post-processor when there is
// a BOS, and the decoder Replace("▁" → " "), ByteFallback, Fuse, Strip(1
// leading space).
//
// Merges: for every mergeable piece p and every split p = a+b into two
// mergeable pieces, the merge (a, b); merges are ordered by p's score, highest
// first (ties by p's id, then by split position). HF's lowest-rank-first rule
// then picks the same merge as SPM's highest-score-first rule whenever the
// vocabulary's scores are distinct (as in every BPE-trained SentencePiece
// model), so LoadHFJSON on the result encodes text to exactly SPM's ids.
// Differences remain where SPM is not HF: control and unknown pieces become
// special added tokens, so their literal text ("<s>") written in the input is
// matched as the token by HF but spelled out by SPM.
func ToHFJSON(t *SPM) ([]byte, error) {
	n := len(t.pieces)
	seen := make(map[string]int, n)
	for id, p := range t.pieces {
		if p == "" {
			return nil, fmt.Errorf("to hf json: token %d is empty", id)
		}
		if prev, dup := seen[p]; dup {
			return nil, fmt.Errorf("to hf json: tokens %d and %d are both %q (tokenizer.json needs unique pieces)", prev, id, p)
		}
		seen[p] = id
	}
	type mergeRow struct {
		a, b  string
		score float32
		id    int32
		pos   int
	}
	var rows []mergeRow
	spaced := false
	for p, id := range t.merge {
		for pos := 0; pos < len(p); {
			_, size := utf8.DecodeRuneInString(p[pos:])
			pos += size
			if pos >= len(p) {
				break
			}
			a, b := p[:pos], p[pos:]
			if _, ok := t.merge[a]; !ok {
				continue
			}
			if _, ok := t.merge[b]; !ok {
				continue
			}
			rows = append(rows, mergeRow{a: a, b: b, score: t.scores[id], id: id, pos: pos})
			spaced = spaced || strings.Contains(p, " ")
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		x, y := rows[i], rows[j]
		if x.score != y.score {
			return x.score > y.score
		}
		if x.id != y.id {
			return x.id < y.id
		}
		return x.pos < y.pos
	})
	merges := make([]any, len(rows))
	for i, r := range rows {
		if spaced {
			merges[i] = [2]string{r.a, r.b}
		} else {
			merges[i] = r.a + " " + r.b
		}
	}

	var added []addedToken
	for id, p := range t.pieces {
		switch t.types[id] {
		case TypeControl, TypeUnknown:
			added = append(added, addedToken{ID: id, Content: p, Special: true})
		case TypeUserDefined:
			added = append(added, addedToken{ID: id, Content: p})
		}
	}
	if added == nil {
		added = []addedToken{}
	}

	var unk any
	if t.unk >= 0 {
		unk = t.pieces[t.unk]
	}
	replace := map[string]any{"type": "Replace", "pattern": map[string]string{"String": " "}, "content": spaceMark}
	var normalizer any = replace
	decoders := []any{
		map[string]any{"type": "Replace", "pattern": map[string]string{"String": spaceMark}, "content": " "},
		map[string]any{"type": "ByteFallback"},
		map[string]any{"type": "Fuse"},
	}
	if t.addSpacePrefix {
		normalizer = map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Prepend", "prepend": spaceMark},
			replace,
		}}
		decoders = append(decoders, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
	}
	var post any
	if t.bos >= 0 {
		bos := t.pieces[t.bos]
		post = map[string]any{
			"type": "TemplateProcessing",
			"single": []any{
				map[string]any{"SpecialToken": map[string]any{"id": bos, "type_id": 0}},
				map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}},
			},
			"pair": []any{
				map[string]any{"SpecialToken": map[string]any{"id": bos, "type_id": 0}},
				map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}},
				map[string]any{"SpecialToken": map[string]any{"id": bos, "type_id": 1}},
				map[string]any{"Sequence": map[string]any{"id": "B", "type_id": 1}},
			},
			"special_tokens": map[string]any{bos: map[string]any{"id": bos, "ids": []int{t.bos}, "tokens": []string{bos}}},
		}
	}
	model := map[string]any{
		"type":                      "BPE",
		"dropout":                   nil,
		"unk_token":                 unk,
		"continuing_subword_prefix": nil,
		"end_of_word_suffix":        nil,
		"fuse_unk":                  true,
		"byte_fallback":             true,
		"ignore_merges":             false,
		"vocab":                     orderedVocab(t.pieces),
		"merges":                    merges,
	}
	doc := []kv{
		{"version", "1.0"},
		{"truncation", nil},
		{"padding", nil},
		{"added_tokens", added},
		{"normalizer", normalizer},
		{"pre_tokenizer", nil},
		{"post_processor", post},
		{"decoder", map[string]any{"type": "Sequence", "decoders": decoders}},
		{"model", model},
	}
	return marshalOrdered(doc)
}

// HFConfigJSON writes the tokenizer_config.json that goes with ToHFJSON's
// output: BOS/EOS/UNK names, add_bos_token (true when there is a BOS),
// add_eos_token false, the Llama tokenizer class with legacy spacing, and no
// clean-up of tokenization spaces.
func HFConfigJSON(t *SPM) ([]byte, error) {
	name := func(id int) any {
		if id < 0 {
			return nil
		}
		return t.pieces[id]
	}
	doc := []kv{
		{"add_bos_token", t.bos >= 0},
		{"add_eos_token", false},
		{"bos_token", name(t.bos)},
		{"eos_token", name(t.eos)},
		{"unk_token", name(t.unk)},
		{"pad_token", nil},
		{"clean_up_tokenization_spaces", false},
		{"legacy", true},
		{"spaces_between_special_tokens", false},
		{"tokenizer_class", "LlamaTokenizer"},
	}
	return marshalOrdered(doc)
}

// kv is one member of a JSON object written in a fixed order.
type kv struct {
	k string
	v any
}

func marshalOrdered(doc []kv) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("{\n")
	for i, e := range doc {
		k, _ := json.Marshal(e.k)
		v, err := json.Marshal(e.v)
		if err != nil {
			return nil, fmt.Errorf("to hf json: %s: %w", e.k, err)
		}
		buf.WriteString("  ")
		buf.Write(k)
		buf.WriteString(": ")
		buf.Write(v)
		if i < len(doc)-1 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
	}
	buf.WriteString("}\n")
	return buf.Bytes(), nil
}

// orderedVocab marshals piece → id in id order.
type orderedVocab []string

func (v orderedVocab) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for id, p := range v {
		if id > 0 {
			buf.WriteByte(',')
		}
		k, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		buf.Write(k)
		fmt.Fprintf(&buf, ":%d", id)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}
