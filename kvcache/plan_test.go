package kvcache_test

import (
	"testing"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/linalg"
)

// truncated keeps the first kRanks[l], vRanks[l] channels of every layer's
// factors (A's first rows, B's first columns): projections with ranks that
// differ between layers, as an allocation plan makes them.
func truncated(p *checkpoints.Projections, kRanks, vRanks []int) *checkpoints.Projections {
	q := &checkpoints.Projections{Hidden: p.Hidden, KVDim: p.KVDim, Meta: p.Meta}
	cut := func(a, b []float32, rank, r int) ([]float32, []float32) {
		na := append([]float32(nil), a[:r*p.Hidden]...)
		nb := make([]float32, p.KVDim*r)
		for i := 0; i < p.KVDim; i++ {
			copy(nb[i*r:(i+1)*r], b[i*rank:i*rank+r])
		}
		return na, nb
	}
	for l, f := range p.Layers {
		g := kv.Factors{KRank: kRanks[l], VRank: vRanks[l]}
		g.Ak, g.Bk = cut(f.Ak, f.Bk, f.KRank, kRanks[l])
		g.Av, g.Bv = cut(f.Av, f.Bv, f.VRank, vRanks[l])
		q.Layers = append(q.Layers, g)
	}
	return q
}

// With ranks that differ per layer (and per-token value groups that differ
// with them), decoding with the real cache still gives the parallel
// evaluation's logits, every layer's cache holds the bytes of the memory
// formula, and MemoryTable's total is their sum.
func TestRealCacheNonUniformPlan(t *testing.T) {
	m, p, toks := fixture(t)
	linalg.SetExact(true)
	defer linalg.SetExact(false)
	kRanks, vRanks := []int{4, 8, 4, 8, 4}, []int{8, 4, 8, 8, 4}
	q := truncated(p, kRanks, vRanks)
	if q.Uniform() {
		t.Fatal("plan is uniform")
	}
	for _, bits := range []int{4, 16} {
		k, v, err := kv.Quant{KBits: bits, VBits: bits, KPerChannel: true, QuantWindow: 32}.Specs(kRanks[0], vRanks[0], m.Config.KVHeads)
		if err != nil {
			t.Fatal(err)
		}
		s := kvcache.Settings{Window: 32, Mode: kv.WindowBlock, K: k, V: v, FP16Cache: true}
		maxDiff, kls := realVsParallel(t, m, q, s, toks)
		if maxDiff > 1e-4 {
			t.Errorf("%d-bit: real cache vs parallel logits differ by %g > 1e-4", bits, maxDiff)
		}
		var total int64
		for l, kl := range kls {
			if c := kl.Config(); c.KRank != kRanks[l] || c.VRank != vRanks[l] || (bits == 4 && c.V.GroupSize != vRanks[l]/m.Config.KVHeads) {
				t.Errorf("%d-bit layer %d: cache ranks %d/%d, value group %d", bits, l, c.KRank, c.VRank, c.V.GroupSize)
			}
			got, want := kl.AllocatedBytes(), kvcache.Bytes(kl.Config(), len(toks)).Total
			if got != want {
				t.Errorf("%d-bit layer %d: cache holds %d bytes, formula %d", bits, l, got, want)
			}
			total += got
		}
		rows, err := eval.MemoryTable(m.Config, kRanks, vRanks, s, len(toks))
		if err != nil {
			t.Fatal(err)
		}
		if rows[0].TotalBytes != total {
			t.Errorf("%d-bit: memory table total %d bytes, the caches hold %d", bits, rows[0].TotalBytes, total)
		}
	}
	if _, err := eval.MemoryTable(m.Config, kRanks[:2], vRanks, kvcache.Settings{Window: 32}, 10); err == nil {
		t.Error("memory table with ranks for 2 of 5 layers accepted")
	}
}
