package tokenizer

import (
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzLoadHFJSON feeds arbitrary bytes as tokenizer.json: loading must
// return a tokenizer or an error, never panic, and a loaded tokenizer must
// encode and decode a few texts without panicking.
func FuzzLoadHFJSON(f *testing.F) {
	f.Add([]byte(tinyHF))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}`))
	f.Add([]byte(`{"model": {"vocab": {"<0x61>": 0, "x": 1}, "merges": [], "byte_fallback": true},
		"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
		"decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 1}]}}`))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"Ġ": 0, "a": 1}, "merges": []},
		"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": false},
		{"type": "Split", "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"}, "behavior": "MergedWithPrevious"},
		{"type": "ByteLevel", "add_prefix_space": true, "use_regex": false}]},
		"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Prepend", "prepend": "x"}, {"type": "Replace", "pattern": {"String": " "}, "content": "a"}]},
		"decoder": {"type": "ByteLevel"}, "post_processor": {"type": "RobertaProcessing", "sep": ["a", 1], "cls": ["Ġ", 0]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := LoadHFJSON(data, nil, nil)
		if err != nil {
			return
		}
		for _, s := range []string{"", "a b", "ab\xff 12 Ġ▁", "<s>x"} {
			ids, err := tok.EncodeWithSpecial(s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tok.DecodeWithSpecial(ids); err != nil {
				t.Fatalf("decode of own ids %v: %v", ids, err)
			}
		}
	})
}

var fuzzToks struct {
	once sync.Once
	spm  *SPM
	hf   []*HF
}

// FuzzEncode encodes arbitrary text with the stories260K SPM and both HF
// families: no panic, ids inside the vocabulary, SPM round trip exact but
// for a literal ▁, GPT-2 round trip exact for valid UTF-8, Mistral's where no space is lost
// (SPM's and Mistral's turn a literal ▁ into a space).
func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", "Hello world", "  two  spaces", "🙂!\n\r\n\t", "a\xffb\xc3", "<s></s><unk><|endoftext|>", "I'm 12345 naïve", "\u00a0\u2003x"} {
		f.Add(s)
	}
	fuzzToks.once.Do(func() {
		fuzzToks.spm = loadStoriesSPM(f, "models/stories260K.gguf")
		for _, fam := range []string{"gpt2", "mistral-7b-v0.1"} {
			tok, _ := loadHFFamily(f, fam)
			fuzzToks.hf = append(fuzzToks.hf, tok)
		}
	})
	spm, hfs := fuzzToks.spm, fuzzToks.hf
	if spm == nil || len(hfs) != 2 {
		f.Skip("assets missing")
	}
	f.Fuzz(func(t *testing.T, s string) {
		start := time.Now()
		ids, err := spm.Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		// SentencePiece writes spaces as ▁, so a literal ▁ decodes as a space.
		d, err := spm.Decode(ids)
		if want := strings.ReplaceAll(s, "\u2581", " "); err != nil || d != want {
			t.Fatalf("spm round trip %q → %v → %q, want %q, %v", s, ids, d, want, err)
		}
		for k, h := range hfs {
			ids, err := h.Encode(s)
			if err != nil {
				t.Fatal(err)
			}
			d, err := h.DecodeWithSpecial(ids)
			if err != nil {
				t.Fatal(err)
			}
			if k == 0 && utf8.ValidString(s) && d != s {
				t.Fatalf("gpt2 round trip %q → %q", s, d)
			}
			// Mistral loses a leading space and turns a literal ▁ into a space.
			if k == 1 && utf8.ValidString(s) && !strings.HasPrefix(s, " ") && !strings.Contains(s, "\u2581") && d != s {
				t.Fatalf("mistral round trip %q → %q", s, d)
			}
		}
		if el := time.Since(start); el > 2*time.Second && len(s) < 1<<16 {
			t.Fatalf("%d bytes took %v", len(s), el)
		}
	})
}

// TestHFNoQuadratic encodes 1 MiB texts without cut points and of ordinary
// words with both families.
func TestHFNoQuadratic(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	for _, fam := range []string{"gpt2", "mistral-7b-v0.1"} {
		tok, _ := loadHFFamily(t, fam)
		for name, text := range map[string]string{
			"run":   strings.Repeat("a", 1<<20),
			"words": strings.Repeat("the little dog ran. ", 1<<20/20),
			"emoji": strings.Repeat("🙂", 1<<18),
		} {
			start := time.Now()
			ids, err := tok.Encode(text)
			el := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %s: 1 MiB → %d ids in %v", fam, name, len(ids), el)
			if el > 10*time.Second {
				t.Fatalf("%s %s: %v", fam, name, el)
			}
		}
	}
}
