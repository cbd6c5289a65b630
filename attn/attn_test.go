package attn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
)

// TestAttentionSoftmaxRows feeds the fused causal softmax score rows whose
// maximum is not the first element and logits of ±1000 (which break
// tensor.SoftMax), with and without the bi-branch window, and compares with a
// float64 softmax written here: relative 1e-12 (float64), 1e-5 (float32).
func TestAttentionSoftmaxRows(t *testing.T) {
	// One-hot keys (Dh = T) make the score of (t, j) equal to q[t][j].
	scores := [][]float64{
		{5},
		{0, 1000},
		{1000, 0, 0},
		{-1000, -999, -1000, 3},
		{0, 0, 1000, 0, 1000},
		{-1000, -1000, -1000, -1000, -1000, -1000},
	}
	const T = 6
	r := rand.New(rand.NewPCG(1, 2))
	v := make([]float64, T*T)
	vo := make([]float64, T*T)
	for i := range v {
		v[i], vo[i] = r.NormFloat64(), r.NormFloat64()
	}
	for _, w := range []int{0, 2} {
		// want: original keys (score 2·q, values vo) for j in (t − w, t], sliding.
		want := make([]float64, T*T)
		for t0, row := range scores {
			s := make([]float64, len(row))
			mx := math.Inf(-1)
			for j, x := range row {
				s[j] = x
				if w > 0 && t0-j < w {
					s[j] = 2 * x
				}
				mx = math.Max(mx, s[j])
			}
			var sum float64
			for j := range s {
				s[j] = math.Exp(s[j] - mx)
				sum += s[j]
			}
			for j := range s {
				vv := v
				if w > 0 && t0-j < w {
					vv = vo
				}
				for i := 0; i < T; i++ {
					want[t0*T+i] += s[j] / sum * vv[j*T+i]
				}
			}
		}
		q := make([]float64, T*T)
		k := make([]float64, T*T)
		ko := make([]float64, T*T)
		for t0, row := range scores {
			copy(q[t0*T:], row)
			k[t0*T+t0], ko[t0*T+t0] = 1, 2
		}
		check := func(name string, got []float64, tol float64) {
			for i := range want {
				if math.IsNaN(got[i]) || math.Abs(got[i]-want[i]) > tol*math.Max(1, math.Abs(want[i])) {
					t.Fatalf("%s, window %d: o[%d][%d] = %g, want %g", name, w, i/T, i%T, got[i], want[i])
				}
			}
		}
		one := Rule{Heads: 1, KVHeads: 1, HeadDim: T}
		a64 := New[float64](1, T, one, w, kv.WindowSliding)
		o64 := make([]float64, T*T)
		a64.Forward(o64, q, k, v, ko, vo)
		check("float64", o64, 1e-12)

		a32 := New[float32](1, T, one, w, kv.WindowSliding)
		a32.Block = 4 // two tiles
		o32 := make([]float32, T*T)
		a32.Forward(o32, f32s(q), f32s(k), f32s(v), f32s(ko), f32s(vo))
		check("float32", f64s(o32), 1e-5)
	}
}

func f32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// vecErr is max|got − want| / max|want|.
func vecErr[T Float](got []T, want []float64) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i])-want[i]))
		den = math.Max(den, math.Abs(want[i]))
	}
	return num / den
}

// TestExp32 checks the float32 exp against math.Exp: relative 3e-7 on
// [−87, 88], ≈ 0 below the float32 range, NaN passes through.
func TestExp32(t *testing.T) {
	var worst float64
	for x := -87.0; x <= 88; x += 0.0137 {
		got := float64(exp32(float32(x)))
		want := math.Exp(float64(float32(x)))
		worst = math.Max(worst, math.Abs(got-want)/want)
	}
	if worst > 3e-7 {
		t.Errorf("exp32 max relative error %.3g > 3e-7", worst)
	}
	if v := exp32(-1000); v > 1.2e-38 || v < 0 {
		t.Errorf("exp32(-1000) = %g", v)
	}
	if exp32(0) != 1 || exp32(-88) < 0 {
		t.Errorf("exp32(-1000) = %g, exp32(-88) = %g", exp32(-1000), exp32(-88))
	}
	if v := exp32(float32(math.NaN())); v == v {
		t.Errorf("exp32(NaN) = %g", v)
	}
}

// TestStackedAttention holds the stacked tiles (every query head of a KV
// group in one tile), alone and with the wide layers' products and
// transposed gradient sums (Wide, as layers from stackWidth on run), to the
// per-head tiles (the kernel narrower layers run): outputs and key and value gradients, with
// and without the bi-branch window, sliding window and soft-cap, kept and
// recomputed probabilities (key blocks of 3 in the wide kernel's
// backwardBlocked), tiles that do not divide T. float64: relative
// 1e-12 of the largest value; float32: 1e-5.
func TestStackedAttention(t *testing.T) {
	const seqs, T = 2, 11
	rules := []struct {
		name   string
		window int
		mode   kv.WindowMode
		slide  int
		cap    float32
	}{
		{"W 0", 0, kv.WindowBlock, 0, 0},
		{"block W 4", 4, kv.WindowBlock, 0, 0},
		{"sliding W 3, slide 5, soft-cap", 3, kv.WindowSliding, 5, 1.5},
	}
	for _, r := range rules {
		for _, keep := range []bool{true, false} {
			rule := Rule{Heads: 6, KVHeads: 2, HeadDim: 4, SoftCap: r.cap, Window: r.slide}
			name := fmt.Sprintf("%s, keep %v", r.name, keep)
			checkStacked[float64](t, name, rule, seqs, T, r.window, r.mode, keep, 1e-12)
			checkStacked[float32](t, name, rule, seqs, T, r.window, r.mode, keep, 1e-5)
		}
	}
}

func checkStacked[T Float](t *testing.T, name string, rule Rule, seqs, tokens, window int, mode kv.WindowMode, keep bool, tol float64) {
	t.Helper()
	rows, QD, KV := seqs*tokens, rule.Heads*rule.HeadDim, rule.KVHeads*rule.HeadDim
	q, do, kh, vh, ko, vo := randInputs[T](rand.New(rand.NewPCG(3, 4)), rows, QD, KV)
	var outs [3][3][]T // per kernel: o, dk, dv
	for i, stack := range []int{1, rule.Heads / rule.KVHeads, rule.Heads / rule.KVHeads} {
		a := New[T](seqs, tokens, rule, window, mode)
		a.Block, a.Stack, a.Keep, a.Wide, a.KeyBlock = 4, stack, keep, i == 2, 3
		o, dk, dv := make([]T, rows*QD), make([]T, rows*KV), make([]T, rows*KV)
		a.Forward(o, q, kh, vh, ko, vo)
		a.Backward(dk, dv, q, kh, vh, ko, vo, o, do)
		outs[i] = [3][]T{o, dk, dv}
	}
	for j, what := range []string{"output", "dK", "dV"} {
		want := make([]float64, len(outs[0][j]))
		for i, v := range outs[0][j] {
			want[i] = float64(v)
		}
		for i, kind := range []string{"", "stacked", "stacked wide"} {
			if e := vecErr(outs[i][j], want); i > 0 && e > tol {
				t.Errorf("%s, %T: %s %s differs from per-head by %.3g > %g", name, q[0], kind, what, e, tol)
			}
		}
	}
}

// TestHalfProbs: in bf16 a wide kernel writes its probabilities and their
// gradients in bf16 (half), the probabilities as unnormalised exponentials
// whose 1/Σ scales the products' rows. Its output and its key and value
// gradients stay within 2% of the largest of the float32 kernel's (the
// float32-probability kernel in bf16: within 2% too), with and without the
// bi-branch window, kept and recomputed (backwardBlocked), and the kept
// and recomputed gradients within 0.5% of each other.
func TestHalfProbs(t *testing.T) {
	if !linalg.HasBF16() {
		t.Skip("no bf16 products in this build")
	}
	defer linalg.SetPrecision(linalg.CurrentPrecision())
	const seqs, T = 2, 40
	rule := Rule{Heads: 8, KVHeads: 2, HeadDim: 16}
	rows, QD, KV := seqs*T, rule.Heads*rule.HeadDim, rule.KVHeads*rule.HeadDim
	q, do, kh, vh, ko, vo := randInputs[float32](rand.New(rand.NewPCG(7, 8)), rows, QD, KV)
	run := func(p linalg.Precision, window int, keep, noHalf bool) (out [3][]float32, half bool) {
		if err := linalg.SetPrecision(p); err != nil {
			t.Fatal(err)
		}
		a := New[float32](seqs, T, rule, window, kv.WindowBlock)
		a.Block, a.Stack, a.Keep, a.Wide, a.KeyBlock, a.noHalf = 8, 4, keep, true, 12, noHalf
		o, dk, dv := make([]float32, rows*QD), make([]float32, rows*KV), make([]float32, rows*KV)
		a.Forward(o, q, kh, vh, ko, vo)
		a.Backward(dk, dv, q, kh, vh, ko, vo, o, do)
		return [3][]float32{o, dk, dv}, a.half
	}
	for _, window := range []int{0, 4} {
		var kept [3][]float32
		for _, keep := range []bool{true, false} {
			name := fmt.Sprintf("W %d, keep %v", window, keep)
			f32, _ := run(linalg.F32, window, keep, false)
			bf, halfOff := run(linalg.BF16, window, keep, true)
			h, half := run(linalg.BF16, window, keep, false)
			if !half || halfOff {
				t.Fatalf("%s: half %v with bf16 probabilities, %v without", name, half, halfOff)
			}
			for j, what := range []string{"output", "dK", "dV"} {
				want := make([]float64, len(f32[j]))
				for i, v := range f32[j] {
					want[i] = float64(v)
				}
				eh, eb := vecErr(h[j], want), vecErr(bf[j], want)
				t.Logf("%s %s: bf16 probabilities %.2g, float32 probabilities %.2g off float32", name, what, eh, eb)
				if eh > 0.02 || eb > 0.02 {
					t.Errorf("%s %s: %.3g (bf16 probabilities), %.3g (float32) off float32 > 0.02", name, what, eh, eb)
				}
				if keep {
					kept[j] = h[j]
					continue
				}
				k := make([]float64, len(kept[j]))
				for i, v := range kept[j] {
					k[i] = float64(v)
				}
				if e := vecErr(h[j], k); e > 0.005 {
					t.Errorf("%s %s: recomputed %.3g off kept > 0.005", name, what, e)
				}
			}
		}
	}
}

// randInputs draws a kernel's inputs from r: queries and output gradients
// (rows, QD), reconstructed and original keys and values (rows, KV).
func randInputs[T Float](r *rand.Rand, rows, QD, KV int) (q, do, kh, vh, ko, vo []T) {
	rnd := func(n int) []T {
		v := make([]T, n)
		for i := range v {
			v[i] = T(r.NormFloat64())
		}
		return v
	}
	return rnd(rows * QD), rnd(rows * QD), rnd(rows * KV), rnd(rows * KV), rnd(rows * KV), rnd(rows * KV)
}

// TestStoreBytes holds StoreBytes to the probability store a kernel
// allocates in its Forward (float32, and bf16 where the build has it: half
// the bytes on a wide layer), with and without the original branch's band,
// and to the reference shapes: the 8B layer keeps its 2048 tokens' store,
// the 7B layer on 4096 tokens recomputes.
func TestStoreBytes(t *testing.T) {
	defer linalg.SetPrecision(linalg.CurrentPrecision())
	const seqs, T = 2, 40
	for _, rule := range []Rule{{Heads: 8, KVHeads: 2, HeadDim: 128}, {Heads: 4, KVHeads: 2, HeadDim: 8}} {
		rows, QD, KV := seqs*T, rule.Heads*rule.HeadDim, rule.KVHeads*rule.HeadDim
		q, _, kh, vh, ko, vo := randInputs[float32](rand.New(rand.NewPCG(9, 10)), rows, QD, KV)
		for _, p := range []linalg.Precision{linalg.F32, linalg.BF16} {
			if p == linalg.BF16 && !linalg.HasBF16() {
				continue
			}
			if err := linalg.SetPrecision(p); err != nil {
				t.Fatal(err)
			}
			for _, window := range []int{0, 4} {
				for _, mode := range []kv.WindowMode{kv.WindowBlock, kv.WindowSliding} {
					a := New[float32](seqs, T, rule, window, mode)
					a.Keep = true
					a.Forward(make([]float32, rows*QD), q, kh, vh, ko, vo)
					got := int64(4*len(a.store) + 2*len(a.store16))
					if want := StoreBytes(seqs, T, rule, window, mode, p == linalg.BF16); got != want || got == 0 {
						t.Errorf("rule %+v, %v, W %d %v: the store has %d bytes, StoreBytes %d", rule, p, window, mode, got, want)
					}
				}
			}
		}
	}
	b8 := Rule{Heads: 32, KVHeads: 8, HeadDim: 128}
	if got, want := StoreBytes(1, 2048, b8, 0, kv.WindowBlock, false), int64(4*32*64*64*528); got != want {
		t.Errorf("8B on 2048 tokens: %d bytes, want %d (32 heads × 64² × (1 + … + 32): tiles of 64 positions × 4 heads)", got, want)
	}
	if got := StoreBytes(1, 2048, b8, 0, kv.WindowBlock, true); got != 4*32*64*64*528/2 {
		t.Errorf("8B on 2048 tokens in bf16: %d bytes, want half of float32's", got)
	}
	if got := StoreBytes(1, 4096, Rule{Heads: 32, KVHeads: 32, HeadDim: 128}, 0, kv.WindowBlock, false); got != 0 {
		t.Errorf("7B on 4096 tokens: %d bytes, want 0 (above the budget: recomputed)", got)
	}
}

// wsBytes is the memory of the tiles in ws.
func wsBytes[T Float](ws *Workspace[T]) int64 {
	var z T
	size, n := int64(unsafe.Sizeof(z)), int64(0)
	for _, b := range ws.tiles {
		n += size * int64(len(b))
	}
	for _, b := range ws.tilesT {
		n += size * int64(len(b))
	}
	for _, b := range ws.tiles16 {
		n += 2 * int64(len(b))
	}
	for _, b := range ws.spans {
		n += 4 * int64(len(b))
	}
	return n
}

// TestWorkspace holds WorkspaceBytes to what a kernel's Forward and
// Backward allocate (float32, and bf16 where the build has it), and kernels
// sharing one Workspace to kernels with their own, bit for bit: an
// all-original kernel and two bi-branch ones used in turn, as a layer graph
// uses them, with and without a soft-cap, wide and narrow.
func TestWorkspace(t *testing.T) {
	defer linalg.SetPrecision(linalg.CurrentPrecision())
	const seqs, T = 2, 40
	for _, rule := range []Rule{{Heads: 8, KVHeads: 2, HeadDim: 128}, {Heads: 8, KVHeads: 2, HeadDim: 128, SoftCap: 30}, {Heads: 4, KVHeads: 2, HeadDim: 8}} {
		rows, QD, KV := seqs*T, rule.Heads*rule.HeadDim, rule.KVHeads*rule.HeadDim
		q, do, kh, vh, ko, vo := randInputs[float32](rand.New(rand.NewPCG(11, 12)), rows, QD, KV)
		for _, p := range []linalg.Precision{linalg.F32, linalg.BF16} {
			if p == linalg.BF16 && !linalg.HasBF16() {
				continue
			}
			if err := linalg.SetPrecision(p); err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("rule %+v, %v", rule, p)
			bf16 := p == linalg.BF16
			// One kernel: its forward's tiles, then its backward's.
			a := New[float32](seqs, T, rule, 4, kv.WindowBlock)
			o := make([]float32, rows*QD)
			a.Forward(o, q, kh, vh, ko, vo)
			tiles, stats := WorkspaceBytes(seqs, T, rule, 4, kv.WindowBlock, bf16, false)
			if got := wsBytes(a.ws); got != tiles || got == 0 {
				t.Errorf("%s: the forward's tiles have %d bytes, WorkspaceBytes %d", name, got, tiles)
			}
			if got := int64(4 * len(a.stats)); got != stats {
				t.Errorf("%s: the statistics have %d bytes, WorkspaceBytes %d", name, got, stats)
			}
			a.Backward(make([]float32, rows*KV), make([]float32, rows*KV), q, kh, vh, ko, vo, o, do)
			if tiles, _ = WorkspaceBytes(seqs, T, rule, 4, kv.WindowBlock, bf16, true); wsBytes(a.ws) != tiles {
				t.Errorf("%s: the backward's tiles have %d bytes, WorkspaceBytes %d", name, wsBytes(a.ws), tiles)
			}
			// Three kernels in turn, on a shared workspace and on their own.
			run := func(ws *Workspace[float32]) (out [][]float32) {
				orig := New[float32](seqs, T, rule, 0, kv.WindowBlock).Use(ws)
				bi := [2]*Kernel[float32]{New[float32](seqs, T, rule, 3, kv.WindowBlock).Use(ws), New[float32](seqs, T, rule, 6, kv.WindowSliding).Use(ws)}
				for _, b := range bi {
					b.Keep = true
				}
				for _, i := range []int{0, 1, 1, 0} {
					ot, o := make([]float32, rows*QD), make([]float32, rows*QD)
					dk, dv := make([]float32, rows*KV), make([]float32, rows*KV)
					orig.Forward(ot, q, ko, vo, nil, nil)
					bi[i].Forward(o, q, kh, vh, ko, vo)
					bi[i].Backward(dk, dv, q, kh, vh, ko, vo, o, do)
					out = append(out, ot, o, dk, dv)
				}
				return out
			}
			ws := &Workspace[float32]{}
			shared, own := run(ws), run(nil)
			for i := range own {
				for j, v := range own[i] {
					if math.Float32bits(v) != math.Float32bits(shared[i][j]) {
						t.Fatalf("%s: result %d [%d] is %g on a shared workspace, %g on their own", name, i, j, shared[i][j], v)
					}
				}
			}
			// a window of every key (kvcache's MeasureOnly) needs the tiles
			// of one as long as the tokens, not of its nominal length
			huge, _ := WorkspaceBytes(seqs, T, rule, math.MaxInt32, kv.WindowBlock, bf16, true)
			if all, _ := WorkspaceBytes(seqs, T, rule, T, kv.WindowBlock, bf16, true); huge != all {
				t.Errorf("%s: a window of 2³¹ − 1 needs %d bytes of tiles, one of the %d tokens %d", name, huge, T, all)
			}
			if tiles, _ := WorkspaceBytes(seqs, T, rule, 6, kv.WindowSliding, bf16, true); wsBytes(ws) != tiles {
				t.Errorf("%s: the shared workspace has %d bytes, the largest kernel's WorkspaceBytes %d", name, wsBytes(ws), tiles)
			}
		}
	}
}
