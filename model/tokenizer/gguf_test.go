package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/model/gguf"
)

// TestFromGGUFByteLevel writes the GPT-2 vocabulary and merges into a GGUF
// file (tokenizer.ggml.model = gpt2), reads it back through FromGGUF and
// checks every GPT-2 golden case.
func TestFromGGUFByteLevel(t *testing.T) {
	dir := testassets.Path(t, "tokenizers/gpt2")
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tj struct {
		Model struct {
			Vocab  map[string]int `json:"vocab"`
			Merges []string       `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		t.Fatal(err)
	}
	tokens := make([]string, len(tj.Model.Vocab))
	types := make([]int32, len(tokens))
	for s, id := range tj.Model.Vocab {
		tokens[id] = s
		types[id] = TypeNormal
	}
	types[50256] = TypeControl
	path := filepath.Join(t.TempDir(), "gpt2.gguf")
	kv := []gguf.KeyValue{
		gguf.KV("general.architecture", "gpt2"),
		gguf.KV(keyModel, "gpt2"),
		gguf.KV(keyPre, "gpt2"),
		gguf.KV(keyTokens, tokens),
		gguf.KV(keyTypes, types),
		gguf.KV(keyMerges, tj.Model.Merges),
		gguf.KV(keyBOS, uint32(50256)),
		gguf.KV(keyEOS, uint32(50256)),
		gguf.KV(keyAddBOS, false),
	}
	if err := gguf.Write(path, 3, kv, nil); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tk, err := FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	hf, ok := tk.(*HF)
	if !ok {
		t.Fatalf("FromGGUF gave %T", tk)
	}
	if hf.EOS() != 50256 || hf.VocabSize() != 50257 {
		t.Fatalf("eos %d vocab %d", hf.EOS(), hf.VocabSize())
	}
	_, cases := loadHFFamily(t, "gpt2")
	pass := 0
	for _, c := range cases {
		ids, _ := hf.Encode(c.Text)
		ws, _ := hf.EncodeWithSpecial(c.Text)
		d, _ := hf.DecodeWithSpecial(c.IDsWithSpecial)
		if eqIDs(ids, c.IDsWithoutSpecial) && eqIDs(ws, c.IDsWithSpecial) && d == c.Decoded {
			pass++
		} else {
			t.Errorf("%s: ids %v decoded %q", c.Name, ids, d)
		}
	}
	t.Logf("gguf gpt2: %d/%d golden cases equal", pass, len(cases))
}

func TestFromGGUFErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, kv ...gguf.KeyValue) *gguf.File {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := gguf.Write(p, 3, kv, nil); err != nil {
			t.Fatal(err)
		}
		f, err := gguf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	cases := []struct {
		name string
		f    *gguf.File
		want string
	}{
		{"nomodel", write("a.gguf", gguf.KV("x", uint32(1))), keyModel},
		{"unknown", write("b.gguf", gguf.KV(keyModel, "wordpiece")), `"wordpiece"`},
		{"notokens", write("c.gguf", gguf.KV(keyModel, "llama")), keyTokens},
		{"nobytes", write("d.gguf", gguf.KV(keyModel, "llama"), gguf.KV(keyTokens, []string{"<unk>", "a"}),
			gguf.KV(keyScores, []float32{0, 0}), gguf.KV(keyTypes, []int32{2, 1})), "<0x00>"},
		{"badpre", write("e.gguf", gguf.KV(keyModel, "gpt2"), gguf.KV(keyTokens, []string{"a"}),
			gguf.KV(keyMerges, []string{}), gguf.KV(keyPre, "mystery")), `"mystery"`},
		{"badmerge", write("f.gguf", gguf.KV(keyModel, "gpt2"), gguf.KV(keyTokens, []string{"a", "b"}),
			gguf.KV(keyMerges, []string{"a c"})), `"c"`},
	}
	for _, c := range cases {
		_, err := FromGGUF(c.f)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %s", c.name, err, c.want)
		}
	}
}
