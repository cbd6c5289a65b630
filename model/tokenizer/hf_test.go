package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
)

type hfGoldenCase struct {
	Name               string   `json:"name"`
	Text               string   `json:"text"`
	IDsWithSpecial     []int    `json:"ids_with_special"`
	IDsWithoutSpecial  []int    `json:"ids_without_special"`
	TokensWithout      []string `json:"tokens_without_special"`
	Decoded            string   `json:"decoded"`
	DecodedSkipSpecial string   `json:"decoded_skip_special"`
}

func loadHFFamily(t testing.TB, family string) (*HF, []hfGoldenCase) {
	t.Helper()
	dir := testassets.Path(t, filepath.Join("tokenizers", family))
	tok, err := LoadHF(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Cases []hfGoldenCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) == 0 {
		t.Fatal("no golden cases")
	}
	return tok, g.Cases
}

func eqIDs(a, b []int) bool { return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b) }

func TestHFGoldens(t *testing.T) {
	for _, family := range []string{"mistral-7b-v0.1", "gpt2"} {
		t.Run(family, func(t *testing.T) {
			tok, cases := loadHFFamily(t, family)
			pass := 0
			for _, c := range cases {
				ok := true
				ids, err := tok.Encode(c.Text)
				if err != nil || !eqIDs(ids, c.IDsWithoutSpecial) {
					t.Errorf("%s: Encode = %v, %v\n want %v", c.Name, ids, err, c.IDsWithoutSpecial)
					ok = false
				}
				if toks := tok.Tokens(c.Text); !eqStrings(toks, c.TokensWithout) {
					t.Errorf("%s: Tokens = %q\n want %q", c.Name, toks, c.TokensWithout)
					ok = false
				}
				ws, err := tok.EncodeWithSpecial(c.Text)
				if err != nil || !eqIDs(ws, c.IDsWithSpecial) {
					t.Errorf("%s: EncodeWithSpecial = %v, %v\n want %v", c.Name, ws, err, c.IDsWithSpecial)
					ok = false
				}
				if len(c.IDsWithSpecial) > 0 {
					if d, err := tok.DecodeWithSpecial(c.IDsWithSpecial); err != nil || d != c.Decoded {
						t.Errorf("%s: DecodeWithSpecial = %q, %v; want %q", c.Name, d, err, c.Decoded)
						ok = false
					}
				}
				if d, err := tok.Decode(c.IDsWithSpecial); err != nil || d != c.DecodedSkipSpecial {
					t.Errorf("%s: Decode = %q, %v; want %q", c.Name, d, err, c.DecodedSkipSpecial)
					ok = false
				}
				if ok {
					pass++
				}
			}
			t.Logf("%s: %d/%d golden cases equal in all fields", family, pass, len(cases))
		})
	}
}

func eqStrings(a, b []string) bool { return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b) }

func TestToHFJSONMatchesSPM(t *testing.T) {
	spm := loadStoriesSPM(t, "models/stories260K.gguf")
	tj, err := ToHFJSON(spm)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := HFConfigJSON(spm)
	if err != nil {
		t.Fatal(err)
	}
	hf, err := LoadHFJSON(tj, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hf.BOS() != spm.BOS() || hf.EOS() != spm.EOS() || hf.VocabSize() != spm.VocabSize() {
		t.Fatalf("bos/eos/vocab %d %d %d, want %d %d %d", hf.BOS(), hf.EOS(), hf.VocabSize(), spm.BOS(), spm.EOS(), spm.VocabSize())
	}
	texts := []string{readText(t, "data/tinystories_eval.txt")}
	for _, c := range loadStoriesGolden(t).Tokens {
		texts = append(texts, c.Text)
	}
	texts = append(texts, "  two  spaces ", "\n\nx", "🙂🙂 ok")
	for i, text := range texts {
		want, _ := spm.Encode(text)
		got, _ := hf.Encode(text)
		if i == 0 && text != "" {
			t.Logf("eval text: %d ids", len(want))
		}
		if !eqIDs(got, want) {
			k := 0
			for k < len(got) && k < len(want) && got[k] == want[k] {
				k++
			}
			t.Errorf("text %d: HF and SPM differ at id %d of %d/%d", i, k, len(got), len(want))
			continue
		}
		ws, _ := hf.EncodeWithSpecial(text)
		if len(ws) != len(want)+1 || ws[0] != spm.BOS() {
			t.Errorf("text %d: EncodeWithSpecial does not add exactly BOS", i)
		}
		{
			hd, _ := hf.Decode(ws)
			sd, _ := spm.Decode(ws)
			if hd != sd {
				t.Errorf("text %d: decode differs: %q vs %q", i, hd, sd)
			}
		}
	}
}

func benchHF(b *testing.B, tok *HF, text string) {
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, err := tok.Encode(text); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeHF(b *testing.B) {
	text := readText(b, "data/tinystories_eval.txt")
	for _, family := range []string{"mistral-7b-v0.1", "gpt2"} {
		b.Run(family, func(b *testing.B) {
			tok, _ := loadHFFamily(b, family)
			benchHF(b, tok, text)
		})
	}
}
