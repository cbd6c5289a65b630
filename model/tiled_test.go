package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
)

// windowOnly is a KVOverride whose only use here is its bi-branch rule.
type windowOnly struct {
	w    int
	mode kv.WindowMode
}

func (o windowOnly) Replace(kr, vr, x, k, v []float32, nSeq, T int) error { return nil }
func (o windowOnly) Window() (int, kv.WindowMode)                         { return o.w, o.mode }

// TestTiledAttention holds the forward's tiled attention (package attn, wide
// layers) to the row kernel attendRow (what exact mode and narrow layers
// run) at a layer of query width 1024 (8 heads, 2 KV heads × 128) on 2 × 37
// tokens: plain, soft-capped with a sliding window, and with replacement
// keys under block and sliding bi-branch windows. float32, max-norm
// relative 1e-5.
func TestTiledAttention(t *testing.T) {
	const nSeq, T = 2, 37
	a := Attention{Heads: 8, KVHeads: 2, HeadDim: 128, Scale: 1 / float32(math.Sqrt(128))}
	if a.Heads*a.HeadDim < TiledWidth {
		t.Fatal("test layer is narrower than TiledWidth")
	}
	n, QD, KV := nSeq*T, a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	r := rand.New(rand.NewPCG(5, 6))
	rnd := func(size int) []float32 {
		v := make([]float32, size)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	q, k, v, kr, vr := rnd(n*QD), rnd(n*KV), rnd(n*KV), rnd(n*KV), rnd(n*KV)
	cases := []struct {
		cap    float32
		window int
		ov     KVOverride
	}{
		{0, 0, nil},
		{20, 9, nil},
		{0, 0, windowOnly{8, kv.WindowBlock}},
		{0, 5, windowOnly{4, kv.WindowSliding}},
		{0, 0, windowOnly{0, kv.WindowBlock}},
		// the window of kvcache's MeasureOnly (every key original), far
		// beyond the tokens: the kernel's tiles are sized by the tokens
		{0, 0, windowOnly{math.MaxInt32, kv.WindowBlock}},
		{0, 0, windowOnly{math.MaxInt32, kv.WindowSliding}},
	}
	for _, c := range cases {
		rule := a
		rule.SoftCap, rule.Window = c.cap, c.window
		name := fmt.Sprintf("cap %g, slide %d, override %v", c.cap, c.window, c.ov)
		run := func(exact bool) []float32 {
			linalg.SetExact(exact)
			defer linalg.SetExact(false)
			out := make([]float32, n*QD)
			attention(&rule, out, append([]float32(nil), q...), k, v, kr, vr, nSeq, T, c.ov, nil)
			return out
		}
		want, got := run(true), run(false)
		var num, den float64
		for i := range want {
			num = math.Max(num, math.Abs(float64(got[i]-want[i])))
			den = math.Max(den, math.Abs(float64(want[i])))
		}
		if num/den > 1e-5 || math.IsNaN(num) {
			t.Errorf("%s: tiled attention differs from the row kernel by %.3g (relative)", name, num/den)
		}
	}
}

// TestWideGate: wide layers' SwiGLU gate (linalg.SiLUGate, split between
// the cores above minSplit) stays within 1e-6 relative of the per-element
// silu that narrow layers keep, and is what SiLUGate computes; activations
// without a vector version (gelu_tanh) compute f per element at any width.
func TestWideGate(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	n := minSplit + 1000
	g, u := make([]float32, n), make([]float32, n)
	for i := range g {
		g[i], u[i] = float32(r.NormFloat64()*6), float32(r.NormFloat64())
	}
	for _, name := range []string{"silu", "gelu_tanh"} {
		act := activations[name]
		narrow, wide := append([]float32(nil), g...), append([]float32(nil), g...)
		gate(narrow, u, act, false)
		gate(wide, u, act, true)
		want := append([]float32(nil), g...)
		if act.wide != nil {
			act.wide(want, u)
		} else {
			want = narrow
		}
		for i := range g {
			if math.Float32bits(wide[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: wide gate element %d = %g, want %g", name, i, wide[i], want[i])
			}
			ref := float64(act.f(g[i])) * float64(u[i])
			if math.Float32bits(narrow[i]) != math.Float32bits(act.f(g[i])*u[i]) || math.Abs(float64(wide[i])-ref) > 1e-6*math.Abs(ref)+1e-30 {
				t.Fatalf("%s: element %d: narrow %g, wide %g, per element %g", name, i, narrow[i], wide[i], ref)
			}
		}
	}
}

// TestFrozenForward: a frozen block's Forward, which reuses its temporaries
// from call to call, gives the bits of an unfrozen one even when the kept
// temporaries hold NaN from before (every one is overwritten or zeroed),
// with and without an override, at a width whose norms, RoPE and gate are
// split between the cores (splitRows).
func TestFrozenForward(t *testing.T) {
	c := Config{Arch: "llama", Hidden: 1024, Layers: 1, Heads: 8, KVHeads: 2, HeadDim: 128, FFN: 2048, Vocab: 64,
		ContextLength: 512, RopeBase: 10000, RMSEps: 1e-5}
	const nSeq, T = 2, 128
	if nSeq*T*c.Hidden < minSplit {
		t.Fatal("test layer is below minSplit")
	}
	m, err := SyntheticShape(c, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b, err := m.Block(0)
	if err != nil {
		t.Fatal(err)
	}
	rope := NewRopeTable(T, b.Attn.Rope)
	r := rand.New(rand.NewPCG(9, 10))
	h0 := make([]float32, nSeq*T*c.Hidden)
	for i := range h0 {
		h0[i] = float32(r.NormFloat64())
	}
	for _, ov := range []KVOverride{nil, windowOnly{16, kv.WindowBlock}} {
		run := func() []float32 {
			h := append([]float32(nil), h0...)
			if err := b.Forward(c, h, nSeq, T, rope, ov); err != nil {
				t.Fatal(err)
			}
			return h
		}
		want := run()
		thaw := b.Freeze()
		run()
		for _, buf := range b.work.bufs {
			for i := range buf[:cap(buf)] {
				buf[:cap(buf)][i] = float32(math.NaN())
			}
		}
		got := run()
		thaw()
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("override %v: frozen forward differs at %d: %g, want %g", ov, i, got[i], want[i])
			}
		}
	}
	// the norm split between the cores equals the rows normed one by one
	n, d := 300, 1024
	x, w := make([]float32, n*d), h0[:d]
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	split, rows := make([]float32, n*d), make([]float32, n*d)
	RMSNorm(split, x, w, n, d, 1e-5)
	for i := range n {
		RMSNorm(rows[i*d:], x[i*d:], w, 1, d, 1e-5)
	}
	for i := range split {
		if math.Float32bits(split[i]) != math.Float32bits(rows[i]) {
			t.Fatalf("split RMSNorm differs at %d", i)
		}
	}
}
