package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

const tinyHF = `{
 "added_tokens": [
  {"id": 4, "content": "<s>", "special": true, "normalized": false},
  {"id": 5, "content": "[X]", "special": false, "normalized": false, "lstrip": true, "rstrip": true},
  {"id": 6, "content": "w", "special": false, "normalized": false, "single_word": true}
 ],
 "pre_tokenizer": {"type": "WhitespaceSplit"},
 "post_processor": {"type": "TemplateProcessing",
   "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
   "special_tokens": {"<s>": {"id": "<s>", "ids": [4], "tokens": ["<s>"]}}},
 "model": {"type": "BPE", "unk_token": "?", "fuse_unk": true,
   "vocab": {"a": 0, "b": 1, "ab": 2, "?": 3, "w": 6, "aw": 7},
   "merges": [["a", "b"], ["a", "w"]]}
}`

func TestHFHandMade(t *testing.T) {
	tok, err := LoadHFJSON([]byte(tinyHF), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		text string
		want []int
	}{
		{"ab a b", []int{2, 0, 1}},
		{"abzzb", []int{2, 3, 1}},       // zz is one fused unknown
		{"ab  [X]  ab", []int{2, 5, 2}}, // lstrip/rstrip swallow the spaces
		{"aw w xw", []int{7, 6, 3, 6}},  // "w" alone matches only as a single word
		{"<s>ab", []int{4, 2}},          // special token found in the text
		{"", nil},
	}
	for _, c := range cases {
		got, err := tok.Encode(c.text)
		if err != nil || !eqIDs(got, c.want) {
			t.Errorf("%q: got %v, %v; want %v", c.text, got, err, c.want)
		}
	}
	ws, _ := tok.EncodeWithSpecial("ab")
	if !eqIDs(ws, []int{4, 2}) {
		t.Errorf("EncodeWithSpecial = %v", ws)
	}
	if tok.BOS() != 4 || tok.EOS() != -1 {
		t.Errorf("bos %d eos %d", tok.BOS(), tok.EOS())
	}
	// No decoder: tokens joined by spaces; special tokens skipped by Decode.
	if d, _ := tok.Decode([]int{4, 2, 0}); d != "ab a" {
		t.Errorf("Decode = %q", d)
	}
	if d, _ := tok.DecodeWithSpecial([]int{4, 2}); d != "<s> ab" {
		t.Errorf("DecodeWithSpecial = %q", d)
	}
	for _, ids := range [][]int{{8}, {-1}, {0, 100}} {
		if _, err := tok.Decode(ids); err == nil || !strings.Contains(err.Error(), "outside vocabulary") {
			t.Errorf("Decode(%v): %v", ids, err)
		}
	}
}

func TestLoadHFErrors(t *testing.T) {
	model := func(extra string) string {
		return `{` + extra + `"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}`
	}
	cases := []struct {
		name, json, want string
	}{
		{"malformed", `{"model": {`, "tokenizer.json"},
		{"nomodel", `{}`, "no model"},
		{"wordpiece", `{"model": {"type": "WordPiece", "vocab": {}}}`, `"WordPiece"`},
		{"notype", `{"model": {"vocab": {"a": 0}}}`, "neither a type nor merges"},
		{"pretok", model(`"pre_tokenizer": {"type": "BertPreTokenizer"},`), `"BertPreTokenizer"`},
		{"normalizer", model(`"normalizer": {"type": "Precompiled"},`), `"Precompiled"`},
		{"decoder", model(`"decoder": {"type": "WordPiece"},`), `"WordPiece"`},
		{"post", model(`"post_processor": {"type": "Mystery"},`), `"Mystery"`},
		{"regex", model(`"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\d+(?=x)"}, "behavior": "Isolated"},`), `\\d+(?=x)`},
		{"behavior", model(`"pre_tokenizer": {"type": "Split", "pattern": {"String": "x"}, "behavior": "Sideways"},`), `"Sideways"`},
		{"mergeunknown", `{"model": {"type": "BPE", "vocab": {"a": 0, "ab": 2}, "merges": ["a b"]}}`, `token "b" not in vocabulary`},
		{"mergeresult", `{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}`, `result "ab" not in vocabulary`},
		{"mergeform", `{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b c"]}}`, "merge 0"},
		{"unk", `{"model": {"type": "BPE", "unk_token": "<unk>", "vocab": {"a": 0}, "merges": []}}`, `"<unk>"`},
		{"dupid", `{"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}}`, "id 0"},
		{"dropout", `{"model": {"type": "BPE", "dropout": 0.1, "vocab": {"a": 0}, "merges": []}}`, "dropout"},
		{"template", model(`"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {}},`), `"<s>"`},
	}
	for _, c := range cases {
		_, err := LoadHFJSON([]byte(c.json), nil, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %s", c.name, err, c.want)
		}
	}
	if _, err := LoadHFJSON([]byte(model("")), []byte("{not json"), nil); err == nil || !strings.Contains(err.Error(), "tokenizer_config.json") {
		t.Errorf("bad config: %v", err)
	}
	if _, err := LoadHF(t.TempDir()); err == nil {
		t.Error("LoadHF on an empty folder: no error")
	}
}

// TestHFInvalidUTF8 checks the stated policy: each invalid byte is read as U+FFFD.
func TestHFInvalidUTF8(t *testing.T) {
	for _, family := range []string{"gpt2", "mistral-7b-v0.1"} {
		tok, _ := loadHFFamily(t, family)
		got, _ := tok.Encode("a\xff\xfeb")
		want, _ := tok.Encode("a\uFFFD\uFFFDb")
		if !eqIDs(got, want) {
			t.Errorf("%s: %v vs %v", family, got, want)
		}
		d, _ := tok.Decode(got)
		if !utf8.ValidString(d) {
			t.Errorf("%s: decoded text not valid UTF-8", family)
		}
	}
}

func TestLossyUTF8(t *testing.T) {
	cases := map[string]string{
		"ok":               "ok",
		"\xe2\x82A":        "\uFFFDA", // truncated 3-byte sequence: one U+FFFD
		"\xff\xfe":         "\uFFFD\uFFFD",
		"\xf0\x9f\x99":     "\uFFFD",
		"\xed\xa0\x80":     "\uFFFD\uFFFD\uFFFD", // surrogate: ED then bad second byte
		"a\xc3":            "a\uFFFD",
		"\xf0\x9f\x99\x82": "🙂",
	}
	for in, want := range cases {
		if got := lossyUTF8([]byte(in)); got != want {
			t.Errorf("%q: got %q want %q", in, got, want)
		}
	}
}
