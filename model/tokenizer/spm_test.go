package tokenizer

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/model/gguf"
)

// storiesGolden is the part of goldens/stories260K.json the tokenizer uses.
type storiesGolden struct {
	Tokens []struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	} `json:"tokens"`
	Greedy struct {
		PromptIDs []int  `json:"prompt_ids"`
		NewIDs    []int  `json:"new_ids"`
		Text      string `json:"text"`
	} `json:"greedy"`
}

func loadStoriesGolden(t testing.TB) storiesGolden {
	t.Helper()
	b, err := os.ReadFile(testassets.Path(t, "goldens/stories260K.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g storiesGolden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Tokens) == 0 {
		t.Fatal("golden has no token cases")
	}
	return g
}

// loadStoriesSPM reads the stories260K vocabulary through FromGGUF.
func loadStoriesSPM(t testing.TB, rel string) *SPM {
	t.Helper()
	f, err := gguf.Open(testassets.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := tok.(*SPM)
	if !ok {
		t.Fatalf("FromGGUF gave %T, want *SPM", tok)
	}
	return s
}

func readText(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(testassets.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSPMGoldens(t *testing.T) {
	g := loadStoriesGolden(t)
	for _, rel := range []string{"models/stories260K.gguf", "models/stories260K-v3.gguf"} {
		tok := loadStoriesSPM(t, rel)
		if tok.VocabSize() != 512 || tok.BOS() != 1 || tok.EOS() != 2 {
			t.Fatalf("%s: vocab %d bos %d eos %d, want 512 1 2", rel, tok.VocabSize(), tok.BOS(), tok.EOS())
		}
		pass := 0
		for i, c := range g.Tokens {
			ids, err := tok.Encode(c.Text)
			if err != nil {
				t.Fatalf("%s case %d: %v", rel, i, err)
			}
			ids = append([]int{tok.BOS()}, ids...)
			if !reflect.DeepEqual(ids, c.IDs) {
				t.Errorf("%s case %d %q:\n got %v\nwant %v", rel, i, c.Text, ids, c.IDs)
				continue
			}
			dec, err := tok.Decode(ids)
			if err != nil || dec != c.Text {
				t.Errorf("%s case %d: decode = %q, %v; want %q", rel, i, dec, err, c.Text)
				continue
			}
			pass++
		}
		t.Logf("%s: %d/%d golden strings equal (ids and decoded text)", rel, pass, len(g.Tokens))
	}
}

func TestSPMDecodeGreedy(t *testing.T) {
	g := loadStoriesGolden(t)
	tok := loadStoriesSPM(t, "models/stories260K.gguf")
	dec, err := tok.Decode(append(append([]int{}, g.Greedy.PromptIDs...), g.Greedy.NewIDs...))
	if err != nil {
		t.Fatal(err)
	}
	if dec != g.Greedy.Text {
		t.Fatalf("decode = %q\nwant     %q", dec, g.Greedy.Text)
	}
}

func TestSPMByteFallback(t *testing.T) {
	tok := loadStoriesSPM(t, "models/stories260K.gguf")
	// 🙂 is F0 9F 99 82; byte token <0xNN> has id NN+3 in this vocabulary.
	ids, err := tok.Encode("🙂")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"▁", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>"}
	var got []string
	for _, id := range ids {
		got = append(got, tok.Piece(id))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("pieces %q, want %q", got, want)
	}
	if dec, _ := tok.Decode(ids); dec != "🙂" {
		t.Fatalf("decode %q", dec)
	}
	// Invalid UTF-8 goes through byte fallback and comes back unchanged.
	bad := "a\xffb\xc3"
	ids, err = tok.Encode(bad)
	if err != nil {
		t.Fatal(err)
	}
	if dec, _ := tok.Decode(ids); dec != bad {
		t.Fatalf("invalid utf-8 round trip: %q", dec)
	}
}

func TestSPMEdgeCases(t *testing.T) {
	tok := loadStoriesSPM(t, "models/stories260K.gguf")
	ids, err := tok.Encode("")
	if err != nil || len(ids) != 0 {
		t.Fatalf("empty text: %v, %v", ids, err)
	}
	for _, bad := range [][]int{{512}, {-1}, {1, 300, 99999}} {
		_, err := tok.Decode(bad)
		if err == nil {
			t.Fatalf("decode %v: no error", bad)
		}
		if !strings.Contains(err.Error(), "outside vocabulary") {
			t.Fatalf("decode %v: error %q does not name the problem", bad, err)
		}
	}
	if _, err := tok.Decode([]int{99999}); !strings.Contains(err.Error(), "99999") {
		t.Fatalf("error does not name the id: %v", err)
	}
	if s, _ := tok.Decode(nil); s != "" {
		t.Fatalf("decode nil = %q", s)
	}
	// BOS/EOS are control tokens: Decode skips them.
	if s, _ := tok.Decode([]int{1, 2}); s != "" {
		t.Fatalf("decode [bos eos] = %q", s)
	}
}

func TestNewSPMErrors(t *testing.T) {
	toks := []string{"<unk>", "<s>", "a"}
	if _, err := NewSPM(toks, []float32{0, 0}, []int32{2, 3, 1}, 1, -1, 0); err == nil || !strings.Contains(err.Error(), "scores") {
		t.Fatalf("length mismatch: %v", err)
	}
	if _, err := NewSPM(toks, []float32{0, 0, 0}, []int32{2, 3}, 1, -1, 0); err == nil || !strings.Contains(err.Error(), "types") {
		t.Fatalf("length mismatch: %v", err)
	}
	_, err := NewSPM(toks, []float32{0, 0, 0}, []int32{2, 3, 1}, 1, -1, 0)
	if err == nil || !strings.Contains(err.Error(), "<0x00>") {
		t.Fatalf("missing byte tokens: %v", err)
	}
	if _, err := NewSPM(nil, nil, nil, -1, -1, -1); err == nil {
		t.Fatal("empty vocab: no error")
	}
	if _, err := NewSPM(toks, []float32{0, 0, 0}, []int32{2, 3, 1}, 7, -1, 0); err == nil {
		t.Fatal("bos outside vocab: no error")
	}
}

// TestSPMMergeOrder checks the merge rule on a hand-made vocabulary against
// hand-derived results: highest score first, leftmost on ties, user-defined
// pieces cut out before merging.
func TestSPMMergeOrder(t *testing.T) {
	toks, scores, types := byteVocab()
	add := func(p string, s float32, ty int32) {
		toks = append(toks, p)
		scores = append(scores, s)
		types = append(types, ty)
	}
	base := len(toks)
	add("▁", 0, TypeNormal)        // base+0
	add("a", 0, TypeNormal)        // base+1
	add("b", 0, TypeNormal)        // base+2
	add("ab", -1, TypeNormal)      // base+3
	add("ba", -2, TypeNormal)      // base+4
	add("▁a", -3, TypeNormal)      // base+5
	add("aa", -1, TypeNormal)      // base+6 (ties with ab)
	add("<x>", 0, TypeUserDefined) // base+7
	tok, err := NewSPM(toks, scores, types, -1, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		text string
		want []int
	}{
		// ▁ a b a: ab(-1) beats ▁a(-3) and ba(-2) → ▁ ab a; then no pieces "▁ab","aba".
		{"aba", []int{base, base + 3, base + 1}},
		// ▁ a a b: aa(-1) and ab(-1) tie → leftmost: aa → ▁ aa b.
		{"aab", []int{base, base + 6, base + 2}},
		// ▁ b a: ba(-2) beats nothing else → ▁ ba.
		{"ba", []int{base, base + 4}},
		// user-defined cut out; each following fragment gets a dummy prefix again.
		{"a<x>b", []int{base + 5, base + 7, base, base + 2}},
		// unknown char → bytes of 'c' (0x63).
		{"c", []int{base, 0x63 + 1}},
	}
	for _, c := range cases {
		got, err := tok.Encode(c.text)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: got %v want %v", c.text, got, c.want)
		}
	}
}

// byteVocab returns <unk> followed by the 256 byte tokens.
func byteVocab() ([]string, []float32, []int32) {
	toks := []string{"<unk>"}
	types := []int32{TypeUnknown}
	for b := 0; b < 256; b++ {
		toks = append(toks, "<0x"+strings.ToUpper(hex2(byte(b)))+">")
		types = append(types, TypeByte)
	}
	return toks, make([]float32, len(toks)), types
}

func hex2(b byte) string {
	const h = "0123456789abcdef"
	return string([]byte{h[b>>4], h[b&15]})
}

func TestSPMEvalTextFast(t *testing.T) {
	tok := loadStoriesSPM(t, "models/stories260K.gguf")
	text := readText(t, "data/tinystories_eval.txt")
	start := time.Now()
	ids, err := tok.Encode(text)
	el := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := tok.Decode(ids)
	if err != nil {
		t.Fatal(err)
	}
	if dec != text {
		t.Fatal("eval text does not round-trip")
	}
	t.Logf("eval text: %d bytes → %d ids in %v (%.1f MB/s)", len(text), len(ids), el, float64(len(text))/el.Seconds()/1e6)
	if el > 5*time.Second {
		t.Fatalf("encoding %d bytes took %v", len(text), el)
	}
}

// TestSPMNoQuadratic encodes a 1 MB text with no cut points (one long run of
// a single letter) and a 1 MB text of ordinary words.
func TestSPMNoQuadratic(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	tok := loadStoriesSPM(t, "models/stories260K.gguf")
	for name, text := range map[string]string{
		"run":   strings.Repeat("a", 1<<20),
		"words": strings.Repeat("the little dog ran. ", 1<<20/20),
	} {
		start := time.Now()
		ids, err := tok.Encode(text)
		el := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if dec, _ := tok.Decode(ids); dec != text {
			t.Fatalf("%s: round trip failed", name)
		}
		t.Logf("%s: 1 MiB → %d ids in %v", name, len(ids), el)
		if el > 5*time.Second {
			t.Fatalf("%s: %v", name, el)
		}
	}
}

func BenchmarkEncodeSPM(b *testing.B) {
	tok := loadStoriesSPM(b, "models/stories260K.gguf")
	text := readText(b, "data/tinystories_eval.txt")
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := tok.Encode(text); err != nil {
			b.Fatal(err)
		}
	}
}
