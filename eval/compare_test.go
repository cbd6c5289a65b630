package eval

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// Compare trains the full-precision run and one QAT run per width, and its
// rows are the perplexities of those runs' projections evaluated directly.
func TestCompare(t *testing.T) {
	cfg := train.Reference() // the reference QAT recipe: the KV term only
	cfg.SeqLen, cfg.CalibChunks, cfg.Holdout, cfg.Steps, cfg.Batch, cfg.LambdaOut = 32, 8, 0, 3, 4, 0
	m, err := train.OpenModel("")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cache := func(mc model.Config, kRank, vRank, b int) (kvcache.Settings, error) {
		k, v, err := kv.Quant{KBits: b, VBits: b, KPerChannel: true, QuantWindow: 32}.Specs(kRank, vRank, mc.KVHeads)
		return kvcache.Settings{Window: 32, Mode: kv.WindowBlock, K: k, V: v}, err
	}
	dir := t.TempDir()
	c := Comparison{Train: cfg, Bits: []int{4, 2}, Dir: dir, Chunks: 4, Window: 32,
		Data: data.Source{SeqLen: 32, Seed: data.SyntheticEvalSeed, Samples: data.SyntheticEvalChunks}}
	rows, err := Compare(context.Background(), m, c)
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := c.Data.Chunks(m, 4)
	if err != nil {
		t.Fatal(err)
	}
	base, err := Perplexity(context.Background(), m, chunks, nil, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	direct := func(run string, b int) float64 {
		p, err := checkpoints.ReadProjections(filepath.Join(dir, run, "projections.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := cache(m.Config, p.Layers[0].KRank, p.Layers[0].VRank, b)
		if err != nil {
			t.Fatal(err)
		}
		r, _, err := Compressed(context.Background(), m, chunks, p, s, 4, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r.Perplexity
	}
	want := []CompareRow{{4, "ptq", direct("fp", 4), base.Perplexity}, {4, "qat", direct("qat4", 4), base.Perplexity},
		{2, "ptq", direct("fp", 2), base.Perplexity}, {2, "qat", direct("qat2", 2), base.Perplexity}}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(rows), len(want))
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("row %d: %+v, want %+v", i, rows[i], want[i])
		}
	}
}
