package kvcache_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/quant"
)

// On the family fixtures (../shared/fixtures/families: Gemma-2's sliding
// window of 8 on layer 0 and both soft-caps, Qwen2.5's k/v biases and YaRN
// attention factor, Qwen3's key norm on reconstructed keys, Llama-3.x
// scaling, Phi-3's fused projections), token-by-token decoding with the
// real bi-branch cache gives exactly (difference 0) the logits of the
// parallel evaluation with the simulated cache, over the 96 ids of
// tokens.ids, for block and sliding windows of 16, 4-bit features (KIVI key
// groups of 8) and fp16 features; and the cache holds the bytes of the
// memory formula.
func TestFamilyRealCacheMatchesParallel(t *testing.T) {
	linalg.SetExact(true) // row-exact products: a row's values do not depend on the batch
	defer linalg.SetExact(false)
	raw, err := os.ReadFile(testassets.Path(t, "fixtures/families/tokens.ids"))
	if err != nil {
		t.Fatal(err)
	}
	var toks []int
	for _, f := range strings.Fields(string(raw)) {
		id, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, id)
	}
	for _, fx := range []struct{ model, proj string }{
		{"gemma2", "gemma2"}, {"qwen25_yarn", "qwen25_yarn"}, {"qwen3", "qwen3"},
		{"phi3", "phi3"}, {"llama32", "llama32"}, {"llama31.gguf", "llama31"},
	} {
		t.Run(fx.model, func(t *testing.T) {
			m, err := model.Open(testassets.Path(t, "fixtures/families/"+fx.model))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			p, err := checkpoints.ReadProjections(testassets.Path(t, "fixtures/families/"+fx.proj+"/proj.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			for _, mode := range []kv.WindowMode{kv.WindowBlock, kv.WindowSliding} {
				for _, bits := range []int{4, 16} {
					k, v, err := kv.Quant{KBits: bits, VBits: bits, KPerChannel: true, QuantWindow: 8}.Specs(p.Layers[0].KRank, p.Layers[0].VRank, m.Config.KVHeads)
					if err != nil {
						t.Fatal(err)
					}
					s := kvcache.Settings{Window: 16, Mode: mode, K: k, V: v, FP16Cache: true}
					maxDiff, kls := realVsParallel(t, m, p, s, toks)
					if maxDiff != 0 {
						t.Errorf("%s %d-bit: real cache vs parallel logits differ by %g", mode, bits, maxDiff)
					}
					for l, kl := range kls {
						if got, want := kl.AllocatedBytes(), kvcache.Bytes(kl.Config(), len(toks)).Total; got != want {
							t.Errorf("%s %d-bit layer %d: cache holds %d bytes, formula %d", mode, bits, l, got, want)
						}
					}
				}
			}
		})
	}
}

// SetBiases refuses a bias of the wrong length, naming it.
func TestSetBiasesLength(t *testing.T) {
	c := kvcache.Config{NKVHeads: 2, HeadDim: 4, KRank: 2, VRank: 2, Window: 4, K: quant.Spec{Bits: 16}, V: quant.Spec{Bits: 16}}
	l, err := kvcache.NewLayer(c, make([]float32, 8*2), make([]float32, 8*2))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetBiases(make([]float32, 7), nil); err == nil || !strings.Contains(err.Error(), "key bias has 7") {
		t.Errorf("short key bias: %v", err)
	}
	if err := l.SetBiases(nil, make([]float32, 8)); err != nil {
		t.Error(err)
	}
}
