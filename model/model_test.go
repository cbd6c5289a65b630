package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/model/gguf"
)

// golden is the part of ../shared/goldens/stories260K.json these tests use
// (produced by an independent PyTorch implementation; see its PROVENANCE).
type golden struct {
	Tokens []struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	} `json:"tokens"`
	Greedy struct {
		PromptIDs []int `json:"prompt_ids"`
		NewIDs    []int `json:"new_ids"`
	} `json:"greedy"`
	Logits struct {
		IDs    []int       `json:"ids"`
		Logits [][]float64 `json:"logits"`
	} `json:"logits"`
}

func loadGolden(t *testing.T) golden {
	t.Helper()
	raw, err := os.ReadFile(testassets.Path(t, "goldens/stories260K.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func openT(t *testing.T, rel string) *Model {
	t.Helper()
	m, err := Open(testassets.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

var storiesFiles = []string{"models/stories260K.gguf", "models/stories260K-v3.gguf"}

// Logits for the golden prompt within 1e-3 absolute of the reference, and
// the v1 and v3 files bit-identical.
func TestGoldenLogits(t *testing.T) {
	g := loadGolden(t)
	var first []float32
	for _, f := range storiesFiles {
		m := openT(t, f)
		logits, err := m.Forward([][]int{g.Logits.IDs}, nil)
		if err != nil {
			t.Fatal(err)
		}
		V := m.Config.Vocab
		var maxDiff float64
		for p, row := range g.Logits.Logits {
			for i, want := range row {
				maxDiff = math.Max(maxDiff, math.Abs(float64(logits[p*V+i])-want))
			}
		}
		if maxDiff > 1e-3 {
			t.Errorf("%s: logits max abs diff %g > 1e-3", f, maxDiff)
		}
		t.Logf("%s: logits max abs diff vs reference %.2g", f, maxDiff)
		if first == nil {
			first = logits
			continue
		}
		for i := range logits {
			if logits[i] != first[i] {
				t.Fatalf("%s: logit %d = %g differs from the v1 file's %g", f, i, logits[i], first[i])
			}
		}
	}
}

// The decoder (one token at a time, with a cache) gives the parallel
// forward's logits, and the 64 greedy tokens equal the golden ones.
func TestGreedyAndDecoder(t *testing.T) {
	g := loadGolden(t)
	m := openT(t, storiesFiles[0])
	ids := append(append([]int{}, g.Greedy.PromptIDs...), g.Greedy.NewIDs...)
	full, err := m.Forward([][]int{ids}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := m.NewDecoder(len(ids), nil)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	var maxDiff float64
	var got []int
	for p, tok := range ids[:len(ids)-1] {
		logits, err := d.Step(tok)
		if err != nil {
			t.Fatal(err)
		}
		for i := range logits {
			maxDiff = math.Max(maxDiff, math.Abs(float64(logits[i]-full[p*V+i])))
		}
		if p >= len(g.Greedy.PromptIDs)-1 {
			got = append(got, Argmax(logits))
		}
	}
	if maxDiff > 1e-4 {
		t.Errorf("decoder vs forward logits differ by %g > 1e-4", maxDiff)
	}
	for i := range g.Greedy.NewIDs {
		if got[i] != g.Greedy.NewIDs[i] {
			t.Fatalf("greedy token %d = %d, want %d (got %v)", i, got[i], g.Greedy.NewIDs[i], got)
		}
	}
}

// Tokenizer from the GGUF vocabulary: BOS + ids equal the goldens.
func TestTokenizerGoldens(t *testing.T) {
	g := loadGolden(t)
	for _, f := range storiesFiles {
		m := openT(t, f)
		for _, c := range g.Tokens {
			ids, err := m.Encode(c.Text)
			if err != nil {
				t.Fatal(err)
			}
			ids = append([]int{m.Tokenizer.BOS()}, ids...)
			if !equalInts(ids, c.IDs) {
				t.Errorf("%s: Encode(%q) = %v, want %v", f, c.Text, ids, c.IDs)
			}
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The converted Hugging Face directory gives the GGUF logits (relative
// difference ≤ 1e-5) and reads back through the HF path.
func TestConvertHF(t *testing.T) {
	g := loadGolden(t)
	src := openT(t, storiesFiles[0])
	dir := filepath.Join(t.TempDir(), "hf")
	if err := src.ConvertHF(dir); err != nil {
		t.Fatal(err)
	}
	if err := src.ConvertHF(dir); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second convert into the same dir: %v", err)
	}
	hf, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	if hf.Format != "safetensors" || hf.RopeLayoutName() == src.RopeLayoutName() {
		t.Errorf("converted model format %q rope %q", hf.Format, hf.RopeLayoutName())
	}
	a, err := src.Forward([][]int{g.Logits.IDs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hf.Forward([][]int{g.Logits.IDs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var num, den float64
	for i := range a {
		num += float64(a[i]-b[i]) * float64(a[i]-b[i])
		den += float64(a[i]) * float64(a[i])
	}
	if rel := math.Sqrt(num / den); rel > 1e-5 {
		t.Errorf("HF vs GGUF logits relative difference %g > 1e-5", rel)
	}
	// the stored Wq rows are in rotate-half layout: reading the HF file's
	// raw tensor gives the converted rows, not the GGUF ones
	raw, _, err := src.src.read("blk.0.attn_q.weight")
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := hf.Block(0)
	same := true
	for i := range raw {
		if raw[i] != hb.Wq[i] {
			same = false
			break
		}
	}
	if same {
		t.Error("HF Wq rows equal the Meta-layout GGUF rows: no RoPE repack happened")
	}
}

func TestRopePermutationRoundTrip(t *testing.T) {
	w := make([]float32, 2*8*3)
	for i := range w {
		w[i] = float32(i)
	}
	h := RopeToHalves(w, 2, 8, 3)
	// row 1 of head 0 in halves layout (i=1, j=0) comes from adjacent row 2
	if h[1*3] != w[2*3] || h[4*3] != w[1*3] {
		t.Fatalf("permutation wrong: %v", h[:24])
	}
	back := RopeToAdjacent(h, 2, 8, 3)
	for i := range w {
		if back[i] != w[i] {
			t.Fatalf("round trip differs at %d", i)
		}
	}
}

// Bad input: each case is an error naming the file and the problem.
func TestOpenBadInput(t *testing.T) {
	dir := t.TempDir()
	good := testassets.Path(t, storiesFiles[1])
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// a GGUF with an unsupported architecture, written by the gguf package
	arch := filepath.Join(dir, "gpt2.gguf")
	if err := gguf.Write(arch, 3, []gguf.KeyValue{gguf.KV("general.architecture", "gpt2")},
		[]gguf.WriteTensor{{Name: "token_embd.weight", Shape: []int{4, 2}, Type: gguf.F32, Data: make([]float32, 8)}}); err != nil {
		t.Fatal(err)
	}
	noKey := filepath.Join(dir, "nokey.gguf")
	if err := gguf.Write(noKey, 3, []gguf.KeyValue{gguf.KV("general.architecture", "llama")}, nil); err != nil {
		t.Fatal(err)
	}
	hfDir := filepath.Join(dir, "hf")
	os.Mkdir(hfDir, 0o755)
	os.WriteFile(filepath.Join(hfDir, "config.json"), []byte(`{"model_type":"llama","hidden_size":64}`), 0o644)
	hfBad := filepath.Join(dir, "hfbad")
	os.Mkdir(hfBad, 0o755)
	os.WriteFile(filepath.Join(hfBad, "config.json"), []byte(`{"model_type":"gpt_neox"}`), 0o644)
	cases := []struct {
		name, path, want string
	}{
		{"truncated", write("trunc.gguf", raw[:len(raw)/2]), "trunc.gguf"},
		{"bad magic", write("magic.bin", append([]byte("JUNK"), raw[4:100]...)), "not a GGUF file"},
		{"empty", write("empty.gguf", nil), "too short"},
		{"missing", filepath.Join(dir, "none.gguf"), "no such file"},
		{"architecture", arch, `architecture "gpt2"`},
		{"missing metadata", noKey, `missing metadata "llama.embedding_length"`},
		{"hf missing key", hfDir, `missing key "num_hidden_layers"`},
		{"hf model type", hfBad, `model_type "gpt_neox"`},
	}
	for _, c := range cases {
		m, err := Open(c.path)
		if err == nil {
			m.Close()
			t.Errorf("%s: Open succeeded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
}

func TestTokenOutsideVocab(t *testing.T) {
	m := openT(t, storiesFiles[0])
	_, err := m.Forward([][]int{{1, 2, 512}}, nil)
	if err == nil || !strings.Contains(err.Error(), "token id 512") {
		t.Errorf("token 512: err = %v", err)
	}
}

func TestSyntheticDeterministic(t *testing.T) {
	a, err := Synthetic(3)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Synthetic(3)
	c, _ := Synthetic(4)
	ba, _ := a.Block(1)
	bb, _ := b.Block(1)
	bc, _ := c.Block(1)
	if ba.Wk[5] != bb.Wk[5] || ba.Wk[5] == bc.Wk[5] {
		t.Error("synthetic weights not a function of the seed")
	}
	s1, err := a.SampleTokens(2, 16, 1, 7)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := b.SampleTokens(2, 16, 1, 7)
	if !equalInts(s1[1], s2[1]) {
		t.Error("sampled tokens not deterministic")
	}
}
