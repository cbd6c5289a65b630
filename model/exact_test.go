package model

import (
	"testing"

	"github.com/cskv/cskv/linalg"
)

// With row-exact products, decoding token by token reproduces the parallel
// forward's logits bit for bit.
func TestDecoderExact(t *testing.T) {
	g := loadGolden(t)
	m := openT(t, storiesFiles[0])
	linalg.SetExact(true)
	defer linalg.SetExact(false)
	ids := g.Logits.IDs
	full, err := m.Forward([][]int{ids}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := m.NewDecoder(len(ids), nil)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	for p, tok := range ids {
		logits, err := d.Step(tok)
		if err != nil {
			t.Fatal(err)
		}
		for i := range logits {
			if logits[i] != full[p*V+i] {
				t.Fatalf("position %d logit %d: decoder %g, forward %g", p, i, logits[i], full[p*V+i])
			}
		}
	}
}
