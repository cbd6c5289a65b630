package graph

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/cskv/cskv/attn"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model"
)

// tinyShape is a small GQA layer: hidden 16, 4 heads, 2 KV heads × 4, ranks 4,
// 2 sequences × 8 tokens.
var tinyShape = BenchShape{Name: "tiny", Hidden: 16, NHeads: 4, NKVHeads: 2, HeadDim: 4, Rank: 4, Seqs: 2, Tokens: 8}

type lossCase struct {
	name      string
	lkv, lout float64
	outSeqs   int
	window    int
	mode      kv.WindowMode
	bias      bool
	tile      int                                   // query rows per attention tile (0 = default)
	recompute bool                                  // backward recomputes the probabilities instead of keeping them
	stack     bool                                  // tiles stack the query heads of a KV group, Wide (as from stackWidth on)
	rule      func(a *model.Attention, seed uint64) // changes the layer's attention rule (nil: plain Llama)
}

// gemmaRule is Gemma-2's attention: scale 1/8 instead of Dh^-½, scores
// soft-capped at 1.5 (well inside tanh's non-linear range for these
// scores), a sliding window of 3 tokens.
func gemmaRule(a *model.Attention, _ uint64) { a.Scale, a.SoftCap, a.Window = 0.125, 1.5, 3 }

// qwen3Rule is Qwen3's per-head q/k norms (weights 1 + N(0, 0.1²)) with
// YaRN-like frequencies: every other pair divided by 4 and the attention
// factor 1.1386.
func qwen3Rule(a *model.Attention, seed uint64) {
	w := RandomInput(LayerSpec{Seqs: 1, Tokens: 2, Hidden: a.HeadDim}, seed+200)
	for i := range w {
		w[i] = 1 + 0.1*w[i]
	}
	a.QNorm, a.KNorm, a.NormEps = w[:a.HeadDim], w[a.HeadDim:], 1e-6
	inv := append([]float64(nil), a.Rope.InvFreq...)
	for i := 1; i < len(inv); i += 2 {
		inv[i] /= 4
	}
	a.Rope = model.Rope{InvFreq: inv, AttentionFactor: 1.1386294361}
}

var lossCases = []lossCase{
	{name: "kv only", lkv: 1},
	{name: "kv only, out seqs set, lambda out 0", lkv: 1, outSeqs: 1},
	{name: "both terms, W 0", lkv: 1, lout: 2, outSeqs: 1},
	{name: "out only", lout: 1, outSeqs: 2},
	{name: "block W 3", lkv: 0.5, lout: 1, outSeqs: 1, window: 3, mode: kv.WindowBlock},
	{name: "sliding W 3", lkv: 0.5, lout: 1, outSeqs: 2, window: 3, mode: kv.WindowSliding},
	{name: "biases, block W 4", lkv: 1, lout: 1, outSeqs: 1, window: 4, mode: kv.WindowBlock, bias: true},
	{name: "biases, sliding W 2", lkv: 1, lout: 3, outSeqs: 1, window: 2, mode: kv.WindowSliding, bias: true},
	{name: "block W 3, tiles of 3", lkv: 1, lout: 1, outSeqs: 2, window: 3, mode: kv.WindowBlock, tile: 3},
	{name: "sliding W 4, tiles of 5, recompute", lkv: 1, lout: 1, outSeqs: 2, window: 4, mode: kv.WindowSliding, tile: 5, recompute: true},
	{name: "W 0, tiles of 3, recompute", lkv: 1, lout: 1, outSeqs: 1, tile: 3, recompute: true},
	{name: "block W 3, recompute", lkv: 1, lout: 1, outSeqs: 1, window: 3, recompute: true},
	{name: "gemma rule, W 0", lkv: 1, lout: 2, outSeqs: 2, rule: gemmaRule},
	{name: "gemma rule, block W 4, tiles of 3", lkv: 0.5, lout: 1, outSeqs: 1, window: 4, mode: kv.WindowBlock, tile: 3, rule: gemmaRule},
	{name: "gemma rule, sliding W 2, recompute", lkv: 1, lout: 1, outSeqs: 2, window: 2, mode: kv.WindowSliding, recompute: true, rule: gemmaRule},
	{name: "qwen3 rule, biases, W 0", lkv: 1, lout: 1, outSeqs: 1, bias: true, rule: qwen3Rule},
	{name: "qwen3 rule, biases, block W 3, tiles of 5", lkv: 1, lout: 2, outSeqs: 2, window: 3, bias: true, tile: 5, rule: qwen3Rule},
	{name: "stacked heads, W 0, tiles of 3", lkv: 1, lout: 2, outSeqs: 2, tile: 3, stack: true},
	{name: "stacked heads, block W 3, tiles of 5, recompute", lkv: 1, lout: 1, outSeqs: 2, window: 3, mode: kv.WindowBlock, tile: 5, recompute: true, stack: true},
	{name: "stacked heads, gemma rule, sliding W 2, tiles of 3", lkv: 1, lout: 1, outSeqs: 2, window: 2, mode: kv.WindowSliding, tile: 3, rule: gemmaRule, stack: true},
	{name: "stacked heads, qwen3 rule, biases, sliding W 4, recompute", lkv: 1, lout: 2, outSeqs: 1, window: 4, mode: kv.WindowSliding, bias: true, recompute: true, rule: qwen3Rule, stack: true},
}

// setTile shrinks the attention tiles of a layer so that several query tiles
// (and bands crossing tile boundaries) are exercised, and with recompute
// makes backward recompute the probabilities.
func setTile[T float](co *core[T], c lossCase) {
	if co.att != nil {
		setKernel(co.att.Kernel, c.tile, c.recompute, c.stack)
		setKernel(co.orig, c.tile, false, c.stack)
	}
}

// newCore64 builds spec's graph in float64 for the gradient checks.
func newCore64(t *testing.T, s LayerSpec, f kv.Factors) *core[float64] {
	t.Helper()
	c, err := newCore[float64](s, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.vm.Close() })
	return c
}

func setKernel[T float](a *attn.Kernel[T], tile int, recompute, stack bool) {
	if tile > 0 {
		a.Block = tile
	}
	if stack {
		a.Stack, a.Wide = a.Group(), true
	}
	if recompute {
		a.Keep = false
	}
}

func tinySpec(c lossCase, seed uint64) LayerSpec {
	s := NewRandomSpec(tinyShape, seed)
	s.LambdaKV, s.LambdaOut, s.OutSeqs, s.OutWindow, s.WindowMode = c.lkv, c.lout, c.outSeqs, c.window, c.mode
	if c.rule != nil {
		c.rule(&s.Attn, seed)
	}
	if c.bias {
		r := RandomInput(LayerSpec{Seqs: 1, Tokens: 1, Hidden: s.QDim() + 2*s.KVDim()}, seed+100)
		s.Bq, s.Bk, s.Bv = r[:s.QDim()], r[s.QDim():s.QDim()+s.KVDim()], r[s.QDim()+s.KVDim():]
	}
	return s
}

func factors64(f kv.Factors) [4][]float64 {
	return [4][]float64{f64s(f.Ak), f64s(f.Bk), f64s(f.Av), f64s(f.Bv)}
}

func relErr(got, want float64) float64 {
	return math.Abs(got-want) / math.Max(math.Abs(want), 1e-300)
}

// vecErr is max|got − want| / max|want|.
func vecErr[T float](got []T, want []float64) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i])-want[i]))
		den = math.Max(den, math.Abs(want[i]))
	}
	return num / den
}

// fdGrad is the central finite-difference gradient of loss with respect to
// every element of f[i].
func fdGrad(loss func([4][]float64) float64, f [4][]float64, i int, h float64) []float64 {
	g := make([]float64, len(f[i]))
	for j := range f[i] {
		v := f[i][j]
		f[i][j] = v + h
		lp := loss(f)
		f[i][j] = v - h
		lm := loss(f)
		f[i][j] = v
		g[j] = (lp - lm) / (2 * h)
	}
	return g
}

// TestFloat64LossAndGradients checks the float64 graph's loss against the
// independent reference (relative 1e-10) and its gradients of all four
// factors against central finite differences of the reference (max-norm
// relative 1e-7, h = 1e-5; measured ≤ 4e-10).
func TestFloat64LossAndGradients(t *testing.T) {
	for i, c := range lossCases {
		t.Run(c.name, func(t *testing.T) {
			s := tinySpec(c, uint64(10+i))
			f := RandomFactors(s, uint64(20+i))
			x := RandomInput(s, uint64(30+i))
			l := newCore64(t, s, f)
			setTile(l, c)
			got, err := l.run(x, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ref := newRef(s, x)
			f64 := factors64(f)
			total, kvLoss, out := ref.loss(f64)
			for _, q := range []struct {
				name      string
				got, want float64
			}{{"total", got.Total, total}, {"kv", got.KV, kvLoss}, {"out", got.Out, out}} {
				if e := relErr(q.got, q.want); e > 1e-10 && math.Abs(q.got-q.want) > 1e-14 {
					t.Errorf("%s loss = %.15g, want %.15g (rel err %.2g > 1e-10)", q.name, q.got, q.want, e)
				}
			}
			if (out == 0) != (c.lout == 0) {
				t.Errorf("out term %g with lambda out %g", out, c.lout)
			}
			ev, err := l.eval(x)
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(ev.Total, got.Total); e > 1e-12 {
				t.Errorf("Eval total %.15g, Run total %.15g", ev.Total, got.Total)
			}
			lossFn := func(f [4][]float64) float64 { tot, _, _ := ref.loss(f); return tot }
			for k, grad := range l.grads {
				name := kv.Names[k]
				fd := fdGrad(lossFn, f64, k, 1e-5)
				e := vecErr(grad, fd)
				t.Logf("float64 grad %s: max rel err %.2g", name, e)
				if e > 1e-7 {
					t.Errorf("grad %s: max rel err %.3g > 1e-7\n got %.6g\nwant %.6g", name, e, grad[:4], fd[:4])
				}
			}
		})
	}
}

// TestFloat32AgainstReference checks the float32 graph (the training path)
// against the float64 reference: loss relative 1e-5 (measured ≤ 5e-8),
// gradients (vs finite differences of the reference) max-norm relative 1e-4
// (measured ≤ 4e-7).
func TestFloat32AgainstReference(t *testing.T) {
	for i, c := range lossCases {
		t.Run(c.name, func(t *testing.T) {
			s := tinySpec(c, uint64(40+i))
			f := RandomFactors(s, uint64(50+i))
			x := RandomInput(s, uint64(60+i))
			l, err := NewLayer(s, f)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			setTile(l.c, c)
			got, err := l.Run(x)
			if err != nil {
				t.Fatal(err)
			}
			ref := newRef(s, x)
			f64 := factors64(f)
			total, _, _ := ref.loss(f64)
			t.Logf("float32 total rel err %.2g", relErr(got.Total, total))
			if e := relErr(got.Total, total); e > 1e-5 {
				t.Errorf("float32 total = %.8g, reference %.8g (rel err %.2g > 1e-5)", got.Total, total, e)
			}
			ev, err := l.Eval(x)
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(ev.Total, total); e > 1e-5 {
				t.Errorf("float32 Eval total = %.8g, reference %.8g", ev.Total, total)
			}
			// OutRel: Eval's only (training steps leave it 0), the output
			// MSE over the target's mean square
			if _, _, out := ref.loss(f64); s.LambdaOut > 0 {
				if e := relErr(ev.OutRel, out/ref.outMeanSquare()); e > 1e-5 || got.OutRel != 0 {
					t.Errorf("float32 Eval OutRel = %.8g, reference %.8g (Run's %g, want 0)", ev.OutRel, out/ref.outMeanSquare(), got.OutRel)
				}
			}
			lossFn := func(f [4][]float64) float64 { tot, _, _ := ref.loss(f); return tot }
			for k, p := range l.Params() {
				fd := fdGrad(lossFn, f64, k, 1e-5)
				e := vecErr(p.Grad, fd)
				t.Logf("float32 grad %s: max rel err %.2g", p.Name, e)
				if e > 1e-4 {
					t.Errorf("float32 grad %s: max rel err %.3g > 1e-4", p.Name, e)
				}
			}
		})
	}
}

// TestRunIsRepeatable: a second Run on the same input gives the same loss
// and gradients (buffers are reused, gradients are not accumulated).
func TestRunIsRepeatable(t *testing.T) {
	s := tinySpec(lossCases[5], 7)
	l, err := NewLayer(s, RandomFactors(s, 8))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	x := RandomInput(s, 9)
	a, err := l.Run(x)
	if err != nil {
		t.Fatal(err)
	}
	ga := slices.Clone(l.Params()[0].Grad)
	if _, err := l.Run(RandomInput(s, 10)); err != nil {
		t.Fatal(err)
	}
	b, err := l.Run(x)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("second run loss %+v, first %+v", b, a)
	}
	if !slices.Equal(ga, l.Params()[0].Grad) {
		t.Errorf("gradient changed between identical runs")
	}
}

// TestFrozenWeights: after Run only the four factors have gradients, and the
// weight slices of the spec are unchanged.
func TestFrozenWeights(t *testing.T) {
	for _, c := range []lossCase{lossCases[4], lossCases[6]} {
		s := tinySpec(c, 3)
		orig := [][]float32{slices.Clone(s.Wq), slices.Clone(s.Wk), slices.Clone(s.Wv), slices.Clone(s.Wo),
			slices.Clone(s.Bq), slices.Clone(s.Bk), slices.Clone(s.Bv)}
		l, err := NewLayer(s, RandomFactors(s, 4))
		if err != nil {
			t.Fatal(err)
		}
		x := RandomInput(s, 5)
		xc := slices.Clone(x)
		for range 2 {
			if _, err := l.Run(x); err != nil {
				t.Fatal(err)
			}
			for _, p := range l.Params() {
				for j := range p.Value {
					p.Value[j] -= 0.1 * p.Grad[j]
				}
			}
		}
		for i, w := range [][]float32{s.Wq, s.Wk, s.Wv, s.Wo, s.Bq, s.Bk, s.Bv} {
			if !slices.Equal(w, orig[i]) {
				t.Errorf("%s: frozen weight %d changed", c.name, i)
			}
		}
		if !slices.Equal(x, xc) {
			t.Errorf("%s: input changed", c.name)
		}
		learn := map[string]bool{"Ak": true, "Bk": true, "Av": true, "Bv": true}
		inputs := 0
		for _, n := range l.c.g.Inputs() {
			_, gerr := n.Grad()
			switch {
			case learn[n.Name()] && gerr != nil:
				t.Errorf("%s: learnable %s has no gradient: %v", c.name, n.Name(), gerr)
			case !learn[n.Name()] && gerr == nil:
				t.Errorf("%s: frozen input %s has a gradient", c.name, n.Name())
			}
			inputs++
		}
		if inputs < 8 {
			t.Errorf("%s: only %d graph inputs", c.name, inputs)
		}
		l.Close()
	}
}

// TestNewLayerErrors: invalid specs return ErrSpec, not a panic.
func TestNewLayerErrors(t *testing.T) {
	base := tinySpec(lossCases[2], 1)
	f := RandomFactors(base, 2)
	for _, c := range []struct {
		name string
		mod  func(*LayerSpec, *kv.Factors)
	}{
		{"both lambdas zero", func(s *LayerSpec, _ *kv.Factors) { s.LambdaKV, s.LambdaOut = 0, 0 }},
		{"negative lambda", func(s *LayerSpec, _ *kv.Factors) { s.LambdaKV = -1 }},
		{"lambda out without out seqs", func(s *LayerSpec, _ *kv.Factors) { s.OutSeqs = 0 }},
		{"out seqs > seqs", func(s *LayerSpec, _ *kv.Factors) { s.OutSeqs = 3 }},
		{"heads not multiple", func(s *LayerSpec, _ *kv.Factors) { s.Attn.KVHeads = 3 }},
		{"short Wk", func(s *LayerSpec, _ *kv.Factors) { s.Wk = s.Wk[:10] }},
		{"short Bk factor", func(_ *LayerSpec, f *kv.Factors) { f.Bk = f.Bk[1:] }},
		{"bias length", func(s *LayerSpec, _ *kv.Factors) { s.Bv = make([]float32, 3) }},
		{"bits 5", func(s *LayerSpec, _ *kv.Factors) { s.Quant.KBits = 5 }},
		{"window not dividing", func(s *LayerSpec, _ *kv.Factors) { s.Quant = kv.Quant{KBits: 4, KPerChannel: true, QuantWindow: 3} }},
		{"odd head dim", func(s *LayerSpec, _ *kv.Factors) { s.Attn.HeadDim, s.Attn.Heads = 3, 4 }},
	} {
		s, ff := base, f
		c.mod(&s, &ff)
		l, err := NewLayer(s, ff)
		if !errors.Is(err, ErrSpec) {
			t.Errorf("%s: err = %v, want ErrSpec", c.name, err)
		}
		if l != nil {
			t.Errorf("%s: got a layer", c.name)
		}
	}
	l, err := NewLayer(base, f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Run(make([]float32, 5)); err == nil {
		t.Error("Run with a short input: no error")
	}
	l.Close()
	if _, err := l.Run(RandomInput(base, 1)); err == nil {
		t.Error("Run after Close: no error")
	}
}

func ExampleNewLayer() {
	spec := NewRandomSpec(BenchShape{Hidden: 16, NHeads: 4, NKVHeads: 2, HeadDim: 4, Rank: 4, Seqs: 2, Tokens: 8}, 1)
	spec.OutSeqs, spec.LambdaOut, spec.OutWindow = 1, 1, 4 // add the output term, bi-branch window of 4
	layer, err := NewLayer(spec, RandomFactors(spec, 2))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer layer.Close()
	x := RandomInput(spec, 3) // (2·8, 16)
	first, _ := layer.Run(x)
	for range 20 {
		if _, err := layer.Run(x); err != nil {
			fmt.Println(err)
			return
		}
		for _, p := range layer.Params() { // plain SGD; package train owns the real optimiser
			for i := range p.Value {
				p.Value[i] -= 0.05 * p.Grad[i]
			}
		}
	}
	last, _ := layer.Eval(x)
	names := []string{}
	for _, p := range layer.Params() {
		names = append(names, p.Name)
	}
	fmt.Println(strings.Join(names, " "))
	fmt.Println("loss decreased:", last.Total < first.Total/2)
	// Output:
	// Ak Bk Av Bv
	// loss decreased: true
}

// Rerun equals Run on the same batch (targets reused, not recomputed).
func TestRerunEqualsRun(t *testing.T) {
	spec := NewRandomSpec(BenchShape{Name: "t", Hidden: 16, NHeads: 4, NKVHeads: 2, HeadDim: 4, Rank: 4, Seqs: 2, Tokens: 8}, 1)
	spec.OutSeqs, spec.LambdaOut = 1, 1
	layer, err := NewLayer(spec, RandomFactors(spec, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer layer.Close()
	if _, err := layer.Rerun(); err == nil {
		t.Fatal("Rerun before Run succeeded")
	}
	x := RandomInput(spec, 3)
	a, err := layer.Run(x)
	if err != nil {
		t.Fatal(err)
	}
	ga := append([]float32(nil), layer.Params()[0].Grad...)
	b, err := layer.Rerun()
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("Rerun loss %+v, Run loss %+v", b, a)
	}
	for i, g := range layer.Params()[0].Grad {
		if g != ga[i] {
			t.Fatalf("gradient %d: Rerun %g, Run %g", i, g, ga[i])
		}
	}
}

// RunTargets with the targets computed by the caller gives Run's loss and
// gradients (1e-6 relative: the caller's product may round differently).
func TestRunTargetsEqualsRun(t *testing.T) {
	spec := NewRandomSpec(BenchShape{Name: "t", Hidden: 16, NHeads: 4, NKVHeads: 2, HeadDim: 4, Rank: 4, Seqs: 2, Tokens: 8}, 1)
	spec.OutSeqs, spec.LambdaOut = 1, 1
	f := RandomFactors(spec, 2)
	x := RandomInput(spec, 3)
	a, err := NewLayer(spec, f)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, _ := NewLayer(spec, f)
	defer b.Close()
	la, err := a.Run(x)
	if err != nil {
		t.Fatal(err)
	}
	m, kv := spec.Rows(), spec.KVDim()
	k, v := make([]float32, m*kv), make([]float32, m*kv)
	linear(k, x, spec.Wk, nil, m, kv, spec.Hidden)
	linear(v, x, spec.Wv, nil, m, kv, spec.Hidden)
	lb, err := b.RunTargets(x, k, v)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(la.Total/lb.Total-1) > 1e-6 || math.Abs(la.KV/lb.KV-1) > 1e-6 {
		t.Fatalf("RunTargets loss %+v, Run loss %+v", lb, la)
	}
	for i := range a.Params() {
		for j, g := range a.Params()[i].Grad {
			if h := b.Params()[i].Grad[j]; math.Abs(float64(g-h)) > 1e-6*(1+math.Abs(float64(g))) {
				t.Fatalf("param %d grad %d: RunTargets %g, Run %g", i, j, h, g)
			}
		}
	}
	if _, err := b.RunTargets(x, k[:1], v); err == nil {
		t.Error("short targets accepted")
	}
}

// One graph with OutWindowAlt switched by SetOutWindow gives, at each
// window and in any order, the losses and gradients of a graph built for
// that window alone, bit for bit (Run, Rerun and Eval); windows outside the
// spec's are errors.
func TestSetOutWindow(t *testing.T) {
	spec := NewRandomSpec(BenchShape{Name: "t", Hidden: 16, NHeads: 4, NKVHeads: 2, HeadDim: 4, Rank: 4, Seqs: 2, Tokens: 8}, 1)
	spec.OutSeqs, spec.LambdaOut = 1, 1
	f, x := RandomFactors(spec, 2), RandomInput(spec, 3)
	for _, pair := range [][2]int{{0, 3}, {2, 5}} {
		both := spec
		both.OutWindow, both.OutWindowAlt = pair[0], pair[1]
		l, err := NewLayer(both, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []int{pair[1], pair[0], pair[1]} {
			alone := spec
			alone.OutWindow = w
			ref, err := NewLayer(alone, f)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.SetOutWindow(w); err != nil {
				t.Fatal(err)
			}
			for _, run := range []func(*Layer) (Loss, error){
				func(l *Layer) (Loss, error) { return l.Run(x) },
				func(l *Layer) (Loss, error) { return l.Rerun() },
				func(l *Layer) (Loss, error) { return l.Eval(x) }} {
				got, err1 := run(l)
				want, err2 := run(ref)
				if err1 != nil || err2 != nil {
					t.Fatal(err1, err2)
				}
				if got != want {
					t.Fatalf("windows %v at %d: loss %+v, the graph of W %d alone %+v", pair, w, got, w, want)
				}
				for i, p := range l.Params() {
					if !slices.Equal(p.Grad, ref.Params()[i].Grad) {
						t.Fatalf("windows %v at %d: %s's gradient differs from the graph of W %d alone", pair, w, p.Name, w)
					}
				}
			}
			ref.Close()
		}
		if err := l.SetOutWindow(pair[1] + 1); err == nil {
			t.Errorf("windows %v: SetOutWindow(%d) succeeded", pair, pair[1]+1)
		}
		l.Close()
	}
}
