package data

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fakeEnc encodes each byte as its value + 10; BOS = 1.
type fakeEnc struct{}

func (fakeEnc) Encode(s string) ([]int, error) {
	out := make([]int, len(s))
	for i := range s {
		out[i] = int(s[i]) + 10
	}
	return out, nil
}
func (fakeEnc) BOS() int { return 1 }

func TestStories(t *testing.T) {
	text := "a b\nc\n<|endoftext|>\n  d \n<|endoftext|>\n\n<|endoftext|>\ne"
	got := Stories(text)
	want := []string{"a b\nc", "d", "e"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Stories = %q, want %q", got, want)
	}
	ids, err := EncodeStories(fakeEnc{}, got)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs := []int{1, 'a' + 10, ' ' + 10, 'b' + 10, '\n' + 10, 'c' + 10, 1, 'd' + 10, 1, 'e' + 10}
	if !reflect.DeepEqual(ids, wantIDs) {
		t.Fatalf("EncodeStories = %v, want %v", ids, wantIDs)
	}
}

func TestLoadFormats(t *testing.T) {
	dir := t.TempDir()
	ids := []int{5, 0, 511, 7, 70000}
	idsPath := filepath.Join(dir, "x.ids")
	os.WriteFile(idsPath, []byte("5 0\n511\t7 70000\n"), 0o644)
	got, err := Load(idsPath, FormatAuto, nil)
	if err != nil || !reflect.DeepEqual(got, ids) {
		t.Fatalf("ids: got %v, %v", got, err)
	}
	binPath := filepath.Join(dir, "x.bin")
	os.WriteFile(binPath, WriteBin(ids), 0o644)
	got, err = Load(binPath, FormatAuto, nil)
	if err != nil || !reflect.DeepEqual(got, ids) {
		t.Fatalf("bin v2: got %v, %v", got, err)
	}
	small := []int{1, 2, 65535}
	os.WriteFile(binPath, WriteBin(small), 0o644)
	if raw, _ := os.ReadFile(binPath); len(raw) != 1024+6 {
		t.Fatalf("uint16 file has %d bytes", len(raw))
	}
	got, err = Load(binPath, FormatBin, nil)
	if err != nil || !reflect.DeepEqual(got, small) {
		t.Fatalf("bin v1: got %v, %v", got, err)
	}
	txt := filepath.Join(dir, "x.txt")
	os.WriteFile(txt, []byte("hi\n<|endoftext|>\n"), 0o644)
	got, err = Load(txt, FormatAuto, fakeEnc{})
	if err != nil || !reflect.DeepEqual(got, []int{1, 'h' + 10, 'i' + 10}) {
		t.Fatalf("text: got %v, %v", got, err)
	}
}

func TestLoadBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	good := WriteBin([]int{1, 2, 3})
	badMagic := append([]byte{}, good...)
	badMagic[0] ^= 1
	badVer := append([]byte{}, good...)
	badVer[4] = 9
	cases := []struct {
		name, path string
		format     Format
		enc        Encoder
		want       string
	}{
		{"empty text", write("e.txt", []byte("\n<|endoftext|>\n  \n")), FormatText, fakeEnc{}, "no data"},
		{"empty ids", write("e.ids", nil), FormatIDs, nil, "no data"},
		{"bad id", write("b.ids", []byte("1 2 x")), FormatIDs, nil, `"x" is not`},
		{"negative id", write("n.ids", []byte("1 -2")), FormatIDs, nil, `"-2" is not`},
		{"short bin", write("s.bin", []byte{1, 2}), FormatBin, nil, "shorter than its"},
		{"bin magic", write("m.bin", badMagic), FormatBin, nil, "bad magic"},
		{"bin version", write("v.bin", badVer), FormatBin, nil, "unsupported version 9"},
		{"bin truncated", write("t.bin", good[:len(good)-1]), FormatBin, nil, "header says 3 tokens"},
		{"invalid utf8", write("u.txt", []byte{0xff, 0xfe}), FormatText, fakeEnc{}, "not valid UTF-8"},
		{"no tokenizer", write("x.txt", []byte("hi")), FormatText, nil, "needs a tokenizer"},
		{"missing", filepath.Join(dir, "nope.txt"), FormatText, fakeEnc{}, "no such file"},
		{"format", write("f.txt", []byte("1")), Format("csv"), nil, `unknown format "csv"`},
	}
	for _, c := range cases {
		_, err := Load(c.path, c.format, c.enc)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
	}
	if _, err := Load(cases[0].path, FormatText, fakeEnc{}); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty text: %v is not ErrEmpty", err)
	}
}

func TestChunks(t *testing.T) {
	ids := make([]int, 10)
	for i := range ids {
		ids[i] = i
	}
	c, err := Chunks(ids, 3, 0)
	if err != nil || len(c) != 3 || !reflect.DeepEqual(c[2], []int{6, 7, 8}) {
		t.Fatalf("Chunks = %v, %v", c, err)
	}
	if _, err := Chunks(ids, 3, 4); err == nil || !strings.Contains(err.Error(), "make 3 chunks of 3, want 4") {
		t.Errorf("too many chunks: %v", err)
	}
	if _, err := Chunks(ids, 11, 0); err == nil || !strings.Contains(err.Error(), "larger than the data") {
		t.Errorf("seq len > data: %v", err)
	}
	if CheckVocab([]int{1, 2, 600}, 512) == nil {
		t.Error("CheckVocab accepted 600 for vocab 512")
	}
	a, _ := Select(c, 2, 7)
	b, _ := Select(c, 2, 7)
	if !reflect.DeepEqual(a, b) || len(a) != 2 {
		t.Errorf("Select not deterministic: %v vs %v", a, b)
	}
	diff := false
	for seed := uint64(0); seed < 20; seed++ {
		x, _ := Select(c, 1, seed)
		if !reflect.DeepEqual(x, a[:1]) {
			diff = true
		}
	}
	if !diff {
		t.Error("Select ignores the seed")
	}
}
