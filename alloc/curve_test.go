package alloc_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cskv/cskv/alloc"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/quant"
	"github.com/cskv/cskv/train"
)

// correlated returns n rows of hidden channels with unequal scales and mixed
// channels, as attention inputs are, and a weight (kvDim, hidden).
func correlated(n, hidden, kvDim int, seed uint64) (x, w []float32) {
	rng := rand.New(rand.NewPCG(seed, 7))
	mix := make([]float64, hidden*hidden)
	for i := range mix {
		mix[i] = rng.NormFloat64() / math.Sqrt(float64(hidden))
	}
	x = make([]float32, n*hidden)
	z := make([]float64, hidden)
	for t := 0; t < n; t++ {
		for c := range z {
			z[c] = rng.NormFloat64() * math.Pow(0.8, float64(c))
		}
		for c := 0; c < hidden; c++ {
			var s float64
			for j, v := range z {
				s += mix[c*hidden+j] * v
			}
			x[t*hidden+c] = float32(s)
		}
	}
	w = make([]float32, kvDim*hidden)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	return x, w
}

// The closed-form tail equals the KV loss the whitened init actually reaches,
// at every rank; tail[0] is ‖X·Wᵀ‖².
func TestTailCurveMatchesWhitenedInit(t *testing.T) {
	const n, hidden, kvDim = 300, 24, 16
	x, w := correlated(n, hidden, kvDim, 3)
	st, err := train.NewStats(hidden, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Add(x); err != nil {
		t.Fatal(err)
	}
	tail, err := alloc.TailCurve(w, st.Gram, kvDim, hidden)
	if err != nil {
		t.Fatal(err)
	}
	if len(tail) != kvDim+1 {
		t.Fatalf("%d tail values, want %d", len(tail), kvDim+1)
	}
	scale := float64(n * kvDim)
	full, err := train.KVLoss(x, w, nil, nil, hidden, kvDim, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(tail[0]/scale-full) / full; d > 1e-9 {
		t.Errorf("tail[0]/(n·kv) = %g, mean square of X·Wᵀ %g (rel diff %g)", tail[0]/scale, full, d)
	}
	for r := 1; r < kvDim; r++ {
		a, b, _, err := train.InitWhiten(w, kvDim, hidden, r, st.Gram, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := train.KVLoss(x, w, a, b, hidden, kvDim, r)
		if err != nil {
			t.Fatal(err)
		}
		want := tail[r] / scale
		// float32 factors and the init's 1e-6 relative ridge: agree to 1e-4 of the full energy.
		if math.Abs(got-want) > 1e-4*full || got < want-1e-6*full {
			t.Errorf("rank %d: whitened init reaches KV loss %g, closed form %g", r, got, want)
		}
		if tail[r] > tail[r-1] {
			t.Errorf("tail not decreasing at rank %d: %g > %g", r, tail[r], tail[r-1])
		}
	}
	if tail[kvDim] != 0 {
		t.Errorf("tail at full rank %g, want 0", tail[kvDim])
	}
}

func TestTailCurveErrors(t *testing.T) {
	if _, err := alloc.TailCurve(make([]float32, 5), make([]float64, 4), 2, 2); err == nil {
		t.Error("wrong weight size accepted")
	}
	if _, err := alloc.TailCurve(make([]float32, 4), make([]float64, 3), 2, 2); err == nil {
		t.Error("wrong Gram size accepted")
	}
	w := []float32{1, float32(math.NaN()), 0, 1}
	if _, err := alloc.TailCurve(w, []float64{1, 0, 0, 1}, 2, 2); err == nil {
		t.Error("NaN weight accepted")
	}
}

func TestGrid(t *testing.T) {
	g, err := alloc.Grid(32, 4, 0)
	if err != nil || len(g) != 8 || g[0] != 4 || g[7] != 32 {
		t.Errorf("Grid(32, 4) = %v, %v", g, err)
	}
	g, err = alloc.Grid(4096, 32, 64)
	if err != nil || len(g) != 64 || g[0] != 64 || g[1]%32 != 0 {
		t.Errorf("Grid(4096, 32, 64) = %v…, %v", g[:2], err)
	}
	g, _ = alloc.Grid(10, 3, 0)
	if g[len(g)-1] != 10 {
		t.Errorf("Grid(10, 3) = %v, want full rank last", g)
	}
	if _, err := alloc.Grid(8, 0, 0); err == nil {
		t.Error("step 0 accepted")
	}
}

// A budget of 0.25 with fp16 features is, in bytes, uniform density 0.25 on
// both sides; with 4-bit features the bytes include scales and zeros, equal
// to the cache's memory formula at the same ranks.
func TestBudgetEqualsDensityBytes(t *testing.T) {
	const layers, heads, hd = 5, 4, 8 // stories260K
	kv := heads * hd
	r, err := train.RankFromDensity(0.25, hd, heads)
	if err != nil {
		t.Fatal(err)
	}
	off := quant.Spec{Bits: quant.Off}
	u := alloc.UnitTokens(off, off)
	budget, err := alloc.BudgetBytes(0.25, layers, kv, u)
	if err != nil {
		t.Fatal(err)
	}
	per := alloc.SideBytes(heads, hd, r, off, u) * 2
	if got := int64(layers) * per; got != budget {
		t.Errorf("density 0.25 costs %d bytes over %d layers, budget 0.25 is %d", got, layers, budget)
	}

	k := quant.Spec{Bits: 4, Grouping: quant.PerChannel, GroupSize: 32}
	v := quant.Spec{Bits: 4, Grouping: quant.PerToken, GroupSize: r / heads}
	u = alloc.UnitTokens(k, v)
	if u != 32 {
		t.Fatalf("unit tokens %d, want the per-channel group 32", u)
	}
	c := kvcache.Config{NKVHeads: heads, HeadDim: hd, KRank: r, VRank: r, Window: 32, K: k, V: v}
	b := kvcache.Bytes(c, u)
	want := b.Codes + b.ScalesZeros + b.Pending
	if got := alloc.SideBytes(heads, hd, r, k, u) + alloc.SideBytes(heads, hd, r, v, u); got != want {
		t.Errorf("4-bit sides cost %d bytes over %d tokens, the memory formula %d", got, u, want)
	}
	if _, err := alloc.BudgetBytes(0, layers, kv, u); err == nil {
		t.Error("budget 0 accepted")
	}
}
