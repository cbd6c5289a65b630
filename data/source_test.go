package data

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fakeModel records what a Source asks of it.
type fakeModel struct {
	enc       Encoder
	vocab     int
	synthetic bool
	asked     [2]int // n, T of the last SampleTokens
	seed      uint64
}

func (m *fakeModel) TextEncoder() Encoder { return m.enc }
func (m *fakeModel) VocabSize() int       { return m.vocab }
func (m *fakeModel) Synthetic() bool      { return m.synthetic }
func (m *fakeModel) SampleTokens(n, T int, temperature float64, seed uint64) ([][]int, error) {
	m.asked, m.seed = [2]int{n, T}, seed
	out := make([][]int, n)
	for i := range out {
		out[i] = make([]int, T)
	}
	return out, nil
}

func TestSourceSampled(t *testing.T) {
	m := &fakeModel{synthetic: true, vocab: 10}
	src := Source{SeqLen: 7, Seed: 42, Samples: 5}
	for _, c := range []struct{ n, want int }{{0, 5}, {3, 3}} {
		got, err := src.Chunks(m, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != c.want || m.asked != [2]int{c.want, 7} || m.seed != 42 {
			t.Errorf("n=%d: %d chunks, asked %v seed %d; want %d chunks of 7, seed 42", c.n, len(got), m.asked, m.seed, c.want)
		}
	}
	if _, err := src.Chunks(&fakeModel{vocab: 10}, 0); !errors.Is(err, ErrNeedFile) {
		t.Errorf("real model without a file: %v, want ErrNeedFile", err)
	}
}

func TestSourceFile(t *testing.T) {
	dir := t.TempDir()
	ids := filepath.Join(dir, "a.ids")
	os.WriteFile(ids, []byte("1 2 3 4 5 6 7"), 0o644)
	m := &fakeModel{vocab: 8}
	got, err := Source{Path: ids, SeqLen: 3}.Chunks(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]int{{1, 2, 3}, {4, 5, 6}}; !reflect.DeepEqual(got, want) {
		t.Errorf("chunks %v, want %v", got, want)
	}
	if _, err := (Source{Path: ids, SeqLen: 3}).Chunks(&fakeModel{vocab: 5}, 0); err == nil || !strings.Contains(err.Error(), "a.ids") || !strings.Contains(err.Error(), "token id 5") {
		t.Errorf("id outside vocab: %v", err)
	}
	if _, err := (Source{Path: ids, SeqLen: 3}).Chunks(m, 3); err == nil || !strings.Contains(err.Error(), "too little data") {
		t.Errorf("too many chunks: %v", err)
	}
	text := filepath.Join(dir, "a.txt")
	os.WriteFile(text, []byte("ab\n<|endoftext|>\ncd\n"), 0o644)
	got, err = Source{Path: text, Format: FormatText, SeqLen: 3}.Chunks(&fakeModel{enc: fakeEnc{}, vocab: 200}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]int{{1, 107, 108}, {1, 109, 110}}; !reflect.DeepEqual(got, want) {
		t.Errorf("text chunks %v, want %v", got, want)
	}
}

func TestFormatValid(t *testing.T) {
	for _, f := range []Format{FormatAuto, FormatText, FormatIDs, FormatBin} {
		if !f.Valid() {
			t.Errorf("%q not valid", f)
		}
	}
	for _, f := range []Format{"", "csv", "Text"} {
		if f.Valid() {
			t.Errorf("%q valid", f)
		}
	}
}
