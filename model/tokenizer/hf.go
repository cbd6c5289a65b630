package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// HF is a Hugging Face tokenizer.json tokenizer with a BPE model: the
// SentencePiece-BPE family (byte fallback, "▁" metaspace, either the
// Metaspace pre-tokenizer or the Prepend+Replace normalizers) and the
// byte-level family (ByteLevel pre-tokenizer with the GPT-2 split, or a
// Split pre-tokenizer with the Llama-3 or Qwen2 pattern).
//
// Encoding follows HF tokenizers: added tokens (special or not) are found in
// the text first, leftmost-longest, those with normalized=false in the raw
// text and the others after normalization; the rest is normalized,
// pre-tokenized and run through BPE. Invalid UTF-8 in the input is not an
// error: each invalid byte is replaced by U+FFFD before anything else.
//
// HF values are safe for concurrent use.
type HF struct {
	norm    []normalizer
	pre     []preTokenizer
	model   *bpeModel
	dec     []decoderStep
	post    template
	added   []addedToken
	raw     addedMatcher // added tokens with normalized=false
	normd   addedMatcher // added tokens with normalized=true
	tokens  []string     // by id: added tokens override the model's
	special []bool       // by id
	valid   []bool       // by id: the id has a token
	bos     int
	eos     int
	addBOS  bool // used only without a post-processor
	addEOS  bool
}

// addedToken is one entry of "added_tokens".
type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type hfFile struct {
	AddedTokens   []addedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

type hfModel struct {
	Type         *string           `json:"type"`
	Dropout      *float64          `json:"dropout"`
	UnkToken     *string           `json:"unk_token"`
	Prefix       *string           `json:"continuing_subword_prefix"`
	Suffix       *string           `json:"end_of_word_suffix"`
	FuseUnk      bool              `json:"fuse_unk"`
	ByteFallback bool              `json:"byte_fallback"`
	IgnoreMerges bool              `json:"ignore_merges"`
	Vocab        map[string]int32  `json:"vocab"`
	Merges       []json.RawMessage `json:"merges"`
}

// hfConfig is the part of tokenizer_config.json / special_tokens_map.json
// that tokenization needs.
type hfConfig struct {
	AddBOS *bool           `json:"add_bos_token"`
	AddEOS *bool           `json:"add_eos_token"`
	BOS    json.RawMessage `json:"bos_token"`
	EOS    json.RawMessage `json:"eos_token"`
}

// tokenName reads a bos_token/eos_token entry: a string or {"content": …}.
func tokenName(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var v struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("token entry is neither a string nor an object with content: %w", err)
	}
	return v.Content, nil
}

// LoadHF reads tokenizer.json from dir, plus tokenizer_config.json and
// special_tokens_map.json when they exist.
func LoadHF(dir string) (*HF, error) {
	tj, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("load hf tokenizer: %w", err)
	}
	var extra [2][]byte
	for i, name := range []string{"tokenizer_config.json", "special_tokens_map.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("load hf tokenizer: %w", err)
		}
		extra[i] = b
	}
	t, err := LoadHFJSON(tj, extra[0], extra[1])
	if err != nil {
		return nil, fmt.Errorf("load hf tokenizer %s: %w", dir, err)
	}
	return t, nil
}

// LoadHFJSON builds an HF from the bytes of tokenizer.json and, optionally
// (nil or empty to omit), tokenizer_config.json and special_tokens_map.json.
func LoadHFJSON(tokenizerJSON, configJSON, specialMapJSON []byte) (*HF, error) {
	var f hfFile
	if err := json.Unmarshal(tokenizerJSON, &f); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if isNull(f.Model) {
		return nil, errors.New("tokenizer.json: no model")
	}
	var mj hfModel
	if err := json.Unmarshal(f.Model, &mj); err != nil {
		return nil, fmt.Errorf("tokenizer.json model: %w", err)
	}
	switch {
	case mj.Type != nil && *mj.Type != "BPE":
		return nil, fmt.Errorf("tokenizer.json: unsupported model type %q (only BPE)", *mj.Type)
	case mj.Type == nil && mj.Merges == nil:
		return nil, errors.New("tokenizer.json: model has neither a type nor merges")
	}
	if mj.Dropout != nil && *mj.Dropout > 0 {
		return nil, fmt.Errorf("tokenizer.json: bpe dropout %v not supported", *mj.Dropout)
	}
	if mj.Vocab == nil {
		return nil, errors.New("tokenizer.json: model has no vocab")
	}
	merges, err := parseMerges(mj.Merges)
	if err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	model, err := newBPEModel(mj.Vocab, merges, deref(mj.UnkToken), mj.FuseUnk, mj.ByteFallback, mj.IgnoreMerges, deref(mj.Prefix), deref(mj.Suffix))
	if err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	t := &HF{model: model, bos: -1, eos: -1}
	if t.norm, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if t.pre, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if t.dec, err = parseDecoder(f.Decoder); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if err := t.setAdded(f.AddedTokens); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if t.post, err = parsePostProcessor(f.PostProcessor); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	for _, ids := range [][]int{t.post.before, t.post.after} {
		for _, id := range ids {
			if id < 0 || id >= len(t.tokens) || !t.valid[id] {
				return nil, fmt.Errorf("tokenizer.json: post_processor id %d is not in the vocabulary", id)
			}
		}
	}
	if err := t.applyConfig(configJSON, specialMapJSON); err != nil {
		return nil, err
	}
	return t, nil
}

// parseMerges accepts both the "a b" string form and the ["a", "b"] form.
func parseMerges(raw []json.RawMessage) ([][2]string, error) {
	out := make([][2]string, len(raw))
	for i, r := range raw {
		r = bytes.TrimSpace(r)
		if len(r) > 0 && r[0] == '"' {
			var s string
			if err := json.Unmarshal(r, &s); err != nil {
				return nil, fmt.Errorf("merge %d: %w", i, err)
			}
			parts := strings.Split(s, " ")
			if len(parts) != 2 {
				return nil, fmt.Errorf("merge %d %q: want two tokens separated by one space", i, s)
			}
			out[i] = [2]string{parts[0], parts[1]}
			continue
		}
		var p []string
		if err := json.Unmarshal(r, &p); err != nil || len(p) != 2 {
			return nil, fmt.Errorf("merge %d %s: want \"a b\" or [\"a\", \"b\"]", i, r)
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

// setAdded registers the added tokens and builds the id → token table.
func (t *HF) setAdded(added []addedToken) error {
	n := len(t.model.tokens)
	for _, a := range added {
		if a.ID < 0 || a.ID >= 1<<26 {
			return fmt.Errorf("added token %q: bad id %d", a.Content, a.ID)
		}
		if a.Content == "" {
			return fmt.Errorf("added token %d: empty content", a.ID)
		}
		if a.ID+1 > n {
			n = a.ID + 1
		}
	}
	t.tokens = make([]string, n)
	copy(t.tokens, t.model.tokens)
	t.special = make([]bool, n)
	t.valid = make([]bool, n)
	for id := range t.model.tokens {
		t.valid[id] = t.model.valid[id]
	}
	t.added = added
	for _, a := range added {
		if mid, ok := t.model.vocab[a.Content]; ok && int(mid) != a.ID {
			return fmt.Errorf("added token %q has id %d but the vocabulary gives %d", a.Content, a.ID, mid)
		}
		t.tokens[a.ID] = a.Content
		t.special[a.ID] = a.Special
		t.valid[a.ID] = true
		if a.Normalized {
			t.normd.add(a)
		} else {
			t.raw.add(a)
		}
	}
	t.raw.sort()
	t.normd.sort()
	return nil
}

// applyConfig reads BOS/EOS names and the add_bos/add_eos flags.
func (t *HF) applyConfig(configJSON, specialMapJSON []byte) error {
	var bosName, eosName string
	for _, src := range []struct {
		name string
		data []byte
	}{{"tokenizer_config.json", configJSON}, {"special_tokens_map.json", specialMapJSON}} {
		if len(bytes.TrimSpace(src.data)) == 0 {
			continue
		}
		var c hfConfig
		if err := json.Unmarshal(src.data, &c); err != nil {
			return fmt.Errorf("%s: %w", src.name, err)
		}
		b, err := tokenName(c.BOS)
		if err != nil {
			return fmt.Errorf("%s bos_token: %w", src.name, err)
		}
		e, err := tokenName(c.EOS)
		if err != nil {
			return fmt.Errorf("%s eos_token: %w", src.name, err)
		}
		if bosName == "" {
			bosName = b
		}
		if eosName == "" {
			eosName = e
		}
		if c.AddBOS != nil && src.name == "tokenizer_config.json" {
			t.addBOS = *c.AddBOS
		}
		if c.AddEOS != nil && src.name == "tokenizer_config.json" {
			t.addEOS = *c.AddEOS
		}
	}
	if bosName == "" {
		bosName = t.post.bosTok
	}
	if eosName == "" {
		eosName = t.post.eosTok
	}
	if eosName == "" {
		for _, name := range []string{"</s>", "<|endoftext|>", "<|end_of_text|>"} {
			if _, ok := t.TokenID(name); ok {
				eosName = name
				break
			}
		}
	}
	if id, ok := t.TokenID(bosName); ok && bosName != "" {
		t.bos = id
	}
	if id, ok := t.TokenID(eosName); ok && eosName != "" {
		t.eos = id
	}
	return nil
}

// TokenID returns the id of a token text (added tokens first).
func (t *HF) TokenID(tok string) (int, bool) {
	for _, a := range t.added {
		if a.Content == tok {
			return a.ID, true
		}
	}
	id, ok := t.model.vocab[tok]
	return int(id), ok
}

// Token returns the text of id, or "" outside the vocabulary.
func (t *HF) Token(id int) string {
	if id < 0 || id >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// BOS returns the beginning-of-sequence id, or -1.
func (t *HF) BOS() int { return t.bos }

// EOS returns the end-of-sequence id, or -1.
func (t *HF) EOS() int { return t.eos }

// VocabSize returns one more than the largest id.
func (t *HF) VocabSize() int { return len(t.tokens) }

// Encode tokenizes text without adding special tokens.
func (t *HF) Encode(text string) ([]int, error) {
	return t.encode(text, nil), nil
}

// Tokens tokenizes text like Encode and returns the token texts.
func (t *HF) Tokens(text string) []string {
	ids := t.encode(text, nil)
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = t.tokens[id]
	}
	return out
}

// EncodeWithSpecial tokenizes text and adds the special tokens that the
// post-processor (TemplateProcessing, RobertaProcessing, BertProcessing)
// prescribes; without a post-processor, BOS/EOS follow add_bos_token and
// add_eos_token of tokenizer_config.json (both default false).
func (t *HF) EncodeWithSpecial(text string) ([]int, error) {
	out := make([]int, 0, len(text)/4+8)
	switch {
	case t.post.known:
		out = append(out, t.post.before...)
	case t.addBOS && t.bos >= 0:
		out = append(out, t.bos)
	}
	out = t.encode(text, out)
	switch {
	case t.post.known:
		out = append(out, t.post.after...)
	case t.addEOS && t.eos >= 0:
		out = append(out, t.eos)
	}
	return out, nil
}

// validUTF8 replaces each invalid byte of s by U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.WriteString(s[i : i+size])
		}
		i += size
	}
	return sb.String()
}

func (t *HF) encode(text string, out []int) []int {
	text = validUTF8(text)
	if out == nil {
		out = make([]int, 0, len(text)/4+4)
	}
	var sc bpeScratch
	sink := func(p piece) { out = t.model.encodeWord(&sc, p.text, out) }
	for i := len(t.pre) - 1; i >= 0; i-- {
		pre, next := t.pre[i], sink
		sink = func(p piece) { pre(p, next) }
	}
	first := true
	for _, seg := range t.raw.split(text) {
		if seg.id >= 0 {
			out = append(out, seg.id)
			first = false
			continue
		}
		s := seg.text
		for _, n := range t.norm {
			s = n(s)
		}
		for k, sub := range t.normd.split(s) {
			if sub.id >= 0 {
				out = append(out, sub.id)
				continue
			}
			sink(piece{text: sub.text, first: first && seg.start == 0 && k == 0})
		}
		first = false
	}
	return out
}

// Decode turns ids into text, skipping special tokens (HF's
// skip_special_tokens=true). An id outside the vocabulary is an error.
func (t *HF) Decode(ids []int) (string, error) { return t.decode(ids, true) }

// DecodeWithSpecial turns ids into text keeping special tokens
// (skip_special_tokens=false).
func (t *HF) DecodeWithSpecial(ids []int) (string, error) { return t.decode(ids, false) }

func (t *HF) decode(ids []int, skipSpecial bool) (string, error) {
	toks := make([]string, 0, len(ids))
	for k, id := range ids {
		if id < 0 || id >= len(t.tokens) || !t.valid[id] {
			return "", fmt.Errorf("hf decode: id %d at position %d outside vocabulary of %d", id, k, len(t.tokens))
		}
		if skipSpecial && t.special[id] {
			continue
		}
		toks = append(toks, t.tokens[id])
	}
	if t.dec == nil {
		return strings.Join(toks, " "), nil
	}
	for _, d := range t.dec {
		toks = d(toks)
	}
	return strings.Join(toks, ""), nil
}

// -------------------------------------------------------------- added tokens

// addedMatcher finds added tokens in text, leftmost-longest.
type addedMatcher struct {
	byFirst map[byte][]addedToken // longest first
}

func (m *addedMatcher) add(a addedToken) {
	if m.byFirst == nil {
		m.byFirst = map[byte][]addedToken{}
	}
	m.byFirst[a.Content[0]] = append(m.byFirst[a.Content[0]], a)
}

func (m *addedMatcher) sort() {
	for k, v := range m.byFirst {
		sort.SliceStable(v, func(i, j int) bool { return len(v[i].Content) > len(v[j].Content) })
		m.byFirst[k] = v
	}
}

// segment is a stretch of text (id −1) or one added token.
type segment struct {
	text  string
	start int // byte offset in the text that was split
	id    int
}

func isWordChar(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)
}

// split cuts s into text segments and added tokens. lstrip/rstrip tokens
// swallow the whitespace beside them; single_word tokens match only between
// non-word characters.
func (m *addedMatcher) split(s string) []segment {
	if len(m.byFirst) == 0 {
		if s == "" {
			return nil
		}
		return []segment{{text: s, id: -1}}
	}
	var out []segment
	last := 0
	for i := 0; i < len(s); {
		a, ok := m.match(s, i)
		if !ok {
			i++
			continue
		}
		start, end := i, i+len(a.Content)
		if a.LStrip {
			start = len(strings.TrimRightFunc(s[last:start], unicode.IsSpace)) + last
		}
		if a.RStrip {
			end = len(s) - len(strings.TrimLeftFunc(s[end:], unicode.IsSpace))
		}
		if start > last {
			out = append(out, segment{text: s[last:start], start: last, id: -1})
		}
		out = append(out, segment{text: s[start:end], start: start, id: a.ID})
		last, i = end, end
	}
	if last < len(s) {
		out = append(out, segment{text: s[last:], start: last, id: -1})
	}
	return out
}

func (m *addedMatcher) match(s string, i int) (addedToken, bool) {
	for _, a := range m.byFirst[s[i]] {
		if !strings.HasPrefix(s[i:], a.Content) {
			continue
		}
		if a.SingleWord {
			if r, size := utf8.DecodeLastRuneInString(s[:i]); size > 0 && isWordChar(r) {
				continue
			}
			if r, size := utf8.DecodeRuneInString(s[i+len(a.Content):]); size > 0 && isWordChar(r) {
				continue
			}
		}
		return a, true
	}
	return addedToken{}, false
}
