package kvcache_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// whitened projections for stories260K at density 0.25 from a small
// calibration set, and the first eval tokens.
func fixture(t *testing.T) (*model.Model, *checkpoints.Projections, []int) {
	t.Helper()
	mp := testassets.Path(t, "models/stories260K.gguf")
	cfg := train.Defaults()
	cfg.Model, cfg.Data = mp, testassets.Path(t, "data/tinystories_calib.txt")
	cfg.SeqLen, cfg.CalibChunks, cfg.Holdout, cfg.Steps = 256, 8, 0, 0
	cfg.Init, cfg.KDensity, cfg.VDensity = train.WhitenInit, 0.25, 0.25
	cfg.Export = filepath.Join(t.TempDir(), "p.safetensors")
	_, err := train.Run(context.Background(), cfg, train.Env{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := checkpoints.ReadProjections(cfg.Export)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ids, err := data.Load(testassets.Path(t, "data/tinystories_eval.txt"), data.FormatText, m.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	return m, p, ids[:100] // 100 tokens: the last KIVI key group is partial
}

// Token-by-token decoding with the real bi-branch cache gives the logits of
// the parallel fake-quantised evaluation (max abs difference ≤ 1e-4), and the
// cache holds exactly the bytes of the memory formula.
func TestRealCacheMatchesParallel(t *testing.T) {
	m, p, toks := fixture(t)
	linalg.SetExact(true) // row-exact products: a row's values do not depend on the batch
	defer linalg.SetExact(false)
	rk, rv := p.Layers[0].KRank, p.Layers[0].VRank
	for _, mode := range []kv.WindowMode{kv.WindowBlock, kv.WindowSliding} {
		for _, bits := range []int{2, 4, 8, 16} {
			k, v, err := kv.Quant{KBits: bits, VBits: bits, KPerChannel: true, QuantWindow: 32}.Specs(rk, rv, m.Config.KVHeads)
			if err != nil {
				t.Fatal(err)
			}
			s := kvcache.Settings{Window: 32, Mode: mode, K: k, V: v, FP16Cache: true}
			maxDiff, kls := realVsParallel(t, m, p, s, toks)
			if maxDiff > 1e-4 {
				t.Errorf("%s %d-bit: real cache vs parallel logits differ by %g > 1e-4", mode, bits, maxDiff)
			}
			t.Logf("%s %d-bit: max abs logit difference %.2g", mode, bits, maxDiff)
			for l, kl := range kls {
				if got, want := kl.AllocatedBytes(), kvcache.Bytes(kl.Config(), len(toks)).Total; got != want {
					t.Errorf("%s %d-bit layer %d: cache holds %d bytes, formula %d", mode, bits, l, got, want)
				}
			}
		}
	}
}

// Without the fp16 emulation, a compressed evaluation with the window
// covering every token equals the uncompressed model.
func TestWindowCoveringAllIsBaseline(t *testing.T) {
	m, p, toks := fixture(t)
	k, v, err := kv.Quant{KBits: 16, VBits: 16, KPerChannel: true, QuantWindow: 32}.Specs(p.Layers[0].KRank, p.Layers[0].VRank, m.Config.KVHeads)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kvcache.NewCompressors(m, p, kvcache.Settings{Window: 1 << 20, K: k, V: v})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Forward([][]int{toks}, kvcache.Overrides(cs))
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.Forward([][]int{toks}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("logit %d: %g with a full window, %g uncompressed", i, got[i], want[i])
		}
	}
}

// realVsParallel decodes toks token by token with the real cache of settings
// s and returns the largest absolute logit difference to the parallel
// evaluation with the simulated cache, and the real cache's layers.
func realVsParallel(t *testing.T, m *model.Model, p *checkpoints.Projections, s kvcache.Settings, toks []int) (float64, []*kvcache.Layer) {
	t.Helper()
	cs, err := kvcache.NewCompressors(m, p, s)
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.Forward([][]int{toks}, kvcache.Overrides(cs))
	if err != nil {
		t.Fatal(err)
	}
	caches, kls, err := kvcache.NewCaches(m, p, s)
	if err != nil {
		t.Fatal(err)
	}
	d, err := m.NewDecoder(len(toks), caches)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	var maxDiff float64
	for pos, tok := range toks {
		got, err := d.Step(tok)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			maxDiff = math.Max(maxDiff, math.Abs(float64(got[i]-want[pos*V+i])))
		}
	}
	return maxDiff, kls
}
