package graph

import (
	"errors"
	"fmt"
	"slices"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/cskv/cskv/attn"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
)

func init() {
	// gorgonia's own ops use the same BLAS as the rest of the program.
	if b, ok := linalg.BLAS().(gorgonia.BLAS); ok {
		gorgonia.Use(b)
	}
}

// Layer is one decoder layer's objective with its compiled tape machine, in
// float32. It is not safe for concurrent use.
type Layer struct {
	spec LayerSpec
	c    *core[float32] // nil once closed
}

// NewLayer builds the graph of spec with the factors init (copied). It
// validates shapes and weights and turns any gorgonia panic into an error.
func NewLayer(spec LayerSpec, init kv.Factors) (*Layer, error) {
	c, err := newCore[float32](spec, init)
	if err != nil {
		return nil, err
	}
	return &Layer{spec: spec, c: c}, nil
}

// Spec returns the layer's spec.
func (l *Layer) Spec() LayerSpec { return l.spec }

// Run does one forward and backward pass on x (N·T, D): afterwards the Grad
// slices of Params hold the gradient of Total. It does not update the factors.
func (l *Layer) Run(x []float32) (Loss, error) {
	return l.RunTargets(x, nil, nil)
}

// RunTargets is Run with the batch's K and V targets precomputed by the
// caller: k, v (N·T, KV) = X·Wkᵀ + bk, X·Wvᵀ + bv (nil: computed here).
// They do not change between steps, so a trainer computes them once for all
// its sequences.
func (l *Layer) RunTargets(x, k, v []float32) (Loss, error) {
	if l.c == nil {
		return Loss{}, errClosed
	}
	return l.c.run(x, k, v)
}

// Rerun repeats Run on the batch last loaded (by Run or Eval), reusing everything
// that depends only on the batch (the K and V targets and, with the output
// term, the rotated queries and the original attention output): one step
// with the targets precomputed.
func (l *Layer) Rerun() (Loss, error) {
	if l.c == nil {
		return Loss{}, errClosed
	}
	return l.c.step()
}

// Eval computes the loss on x (N·T, D) without gradients (plain Go, same
// kernels). The output term is evaluated whenever OutSeqs > 0, even when
// LambdaOut is 0.
func (l *Layer) Eval(x []float32) (Loss, error) {
	if l.c == nil {
		return Loss{}, errClosed
	}
	return l.c.eval(x)
}

// SetOutWindow makes the output term's attention run at bi-branch window w
// from the next Run, Rerun or Eval on: the spec's OutWindow or
// OutWindowAlt. One graph thus trains both windows of --out-window-alt
// (docs/METHOD.md §3); only attention's own buffers are held twice.
func (l *Layer) SetOutWindow(w int) error {
	if l.c == nil {
		return errClosed
	}
	for i, cw := range l.c.s.OutWindows() {
		if cw == w {
			if l.c.atts[i] != nil { // nil without an output term
				l.c.att.Kernel = l.c.atts[i]
			}
			return nil
		}
	}
	return fmt.Errorf("graph: out window %d: the layer's output term runs at %v", w, l.c.s.OutWindows())
}

// Params returns Ak, Bk, Av, Bv with live backing slices (nil once closed).
func (l *Layer) Params() []Param {
	if l.c == nil {
		return nil
	}
	ps := make([]Param, 4)
	for i := range ps {
		ps[i] = Param{Name: kv.Names[i], Value: l.c.vals[i], Grad: l.c.grads[i]}
	}
	return ps
}

// Factors returns copies of the current factors.
func (l *Layer) Factors() kv.Factors {
	f := kv.Factors{KRank: l.spec.KRank, VRank: l.spec.VRank}
	if l.c != nil {
		var v [4][]float32
		for i := range v {
			v[i] = append([]float32(nil), l.c.vals[i]...)
		}
		f.SetTensors(v)
	}
	return f
}

// Close releases the tape machine. The layer cannot be used afterwards.
func (l *Layer) Close() error {
	if l.c == nil {
		return nil
	}
	err := l.c.vm.Close()
	l.c.thaw()
	l.c = nil
	return err
}

var errClosed = errors.New("graph: layer is closed")

// core is the layer in one element type.
type core[T float] struct {
	s                   LayerSpec
	m, mo, d, kv, qd    int
	wq, wk, wv, bq, bk  []T // frozen weights (aliases of the spec for float32)
	bv                  []T
	x                   []T        // (M, D) graph input
	kt, vt              []T        // (M, KV) targets X·Wkᵀ + bk, X·Wvᵀ + bv
	qs                  []T        // (Mo, QD) RoPE(X·Wqᵀ + bq)/√Dh
	kr                  []T        // (Mo, KV) RoPE(K)
	vo                  []T        // (Mo, KV) = vt[:Mo·KV]
	ot                  []T        // (Mo, QD) original attention heads
	gram                []T        // (QD, QD) Woᵀ·Wo, the output term's metric (gram)
	gy                  []T        // (Mo, QD) the heads' error times G (the output MSE's product; Eval's scratch)
	ms                  [3]float64 // mean squares of K, V, out targets (out: Eval only)
	vals, grads         [4][]T     // Ak (Rk, D), Bk (KV, Rk), Av (Rv, D), Bv (KV, Rv)
	rope                *ropeTable[T]
	qNorm, kNorm        *headNorm[T]       // the layer's query and key norms (nil when it has none)
	att                 *kernelRef[T]      // bi-branch attention of the output term, at the window in use
	atts                [2]*attn.Kernel[T] // at OutWindow and OutWindowAlt (nil without it)
	orig                *attn.Kernel[T]    // all-original attention for the target
	fqK, fqV            *fakeQuant[T]
	mseK, mseV, mseO    *mseOp[T]
	g                   *gorgonia.ExprGraph
	vm                  gorgonia.VM
	ck, cv, kh, vh, khr []T  // Eval scratch
	loaded              bool // a batch is loaded (by Run or Eval)
	ob                  []T
}

// newCore validates spec and builds its graph in element type T: float32
// for Layer; float64 only for this package's gradient checks, which compare
// the same code against an independent float64 reference.
func newCore[T float](spec LayerSpec, init kv.Factors) (*core[T], error) {
	if err := spec.validate(init); err != nil {
		return nil, err
	}
	return build[T](spec, init)
}

func build[T float](s LayerSpec, init kv.Factors) (c *core[T], err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("graph: building the layer graph: %v", r)
		}
	}()
	c = &core[T]{s: s, m: s.Rows(), mo: s.OutSeqs * s.Tokens, d: s.Hidden, kv: s.KVDim(), qd: s.QDim()}
	frozen := func(w []float32) []T {
		if w == nil {
			return nil
		}
		if v, ok := any(w).([]T); ok {
			return v
		}
		v := make([]T, len(w))
		convert(v, w)
		return v
	}
	c.wq, c.wk, c.wv = frozen(s.Wq), frozen(s.Wk), frozen(s.Wv)
	c.bq, c.bk, c.bv = frozen(s.Bq), frozen(s.Bk), frozen(s.Bv)
	for i, f := range init.Tensors() {
		c.vals[i] = make([]T, len(f))
		convert(c.vals[i], f)
		c.grads[i] = make([]T, len(f))
	}
	c.x = make([]T, c.m*c.d)
	c.kt, c.vt = make([]T, c.m*c.kv), make([]T, c.m*c.kv)
	if s.OutSeqs > 0 {
		c.qs, c.kr = make([]T, c.mo*c.qd), make([]T, c.mo*c.kv)
		c.vo = c.vt[:c.mo*c.kv]
		c.ot, c.gy = make([]T, c.mo*c.qd), make([]T, c.mo*c.qd)
		c.gram = gram(frozen(s.Wo), c.d, c.qd) // Wo enters the graph only through G
		c.rope = newRope[T](s.Tokens, s.Attn.Rope)
		c.qNorm = newHeadNorm[T](s.Attn.QNorm, s.Attn.NormEps)
		c.kNorm = newHeadNorm[T](s.Attn.KNorm, s.Attn.NormEps)
		// The kernels run one at a time: one set of tiles serves them all.
		c.orig = attn.New[T](s.OutSeqs, s.Tokens, s.Attn.KernelRule(), 0, kv.WindowBlock)
		ws := &attn.Workspace[T]{}
		c.orig.Use(ws)
		for i, w := range c.s.OutWindows() {
			c.atts[i] = attn.New[T](s.OutSeqs, s.Tokens, s.Attn.KernelRule(), w, s.WindowMode).Use(ws)
			c.atts[i].Keep = s.hasOut()
		}
		c.att = &kernelRef[T]{c.atts[0]}
	}
	kq, vq, _ := s.Quant.Specs(s.KRank, s.VRank, s.Attn.KVHeads) // checked by validate
	if kq.Enabled() {
		c.fqK = &fakeQuant[T]{spec: kq, tokens: s.Tokens, cols: s.KRank}
	}
	if vq.Enabled() {
		c.fqV = &fakeQuant[T]{spec: vq, tokens: s.Tokens, cols: s.VRank}
	}

	g := gorgonia.NewGraph()
	c.g = g
	dt := tensor.Float32
	if _, ok := any(c.x).([]float64); ok {
		dt = tensor.Float64
	}
	mat := func(name string, v []T, rows, cols int) *gorgonia.Node {
		t := tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(v))
		return gorgonia.NewMatrix(g, dt, gorgonia.WithShape(rows, cols), gorgonia.WithName(name), gorgonia.WithValue(t))
	}
	apply := func(op gorgonia.Op, in ...*gorgonia.Node) *gorgonia.Node {
		return gorgonia.Must(gorgonia.ApplyOp(op, in...))
	}
	X := mat("X", c.x, c.m, c.d)
	var learn gorgonia.Nodes // Ak, Bk, Av, Bv
	for i, sh := range (kv.Factors{KRank: s.KRank, VRank: s.VRank}).Shapes(c.d, c.kv) {
		learn = append(learn, mat(kv.Names[i], c.vals[i], sh[0], sh[1]))
	}
	// KV term: Ĉ = FakeQuant(X·Aᵀ), K̂ = Ĉ·Bᵀ + b, MSE against the target.
	recon := func(side string, a, b *gorgonia.Node, bias []T, fq *fakeQuant[T], target []T, lossOp *mseOp[T]) (hat, loss *gorgonia.Node) {
		cn := apply(newLinOp[T]("C"+side, nil, false, true), X, a)
		if fq != nil {
			cn = apply(newFakeQuantOp("FakeQuant"+side, fq), cn)
		}
		hat = apply(newLinOp[T](side+"hat", bias, true, true), cn, b)
		loss = apply(lossOp, hat, mat(side, target, c.m, c.kv))
		return hat, loss
	}
	c.mseK = &mseOp[T]{opBase: opBase{name: "MSE(K)"}, w: s.LambdaKV}
	c.mseV = &mseOp[T]{opBase: opBase{name: "MSE(V)"}, w: s.LambdaKV}
	kh, lk := recon("K", learn[0], learn[1], c.bk, c.fqK, c.kt, c.mseK)
	vh, lv := recon("V", learn[2], learn[3], c.bv, c.fqV, c.vt, c.mseV)
	cost := gorgonia.Must(gorgonia.Add(lk, lv))

	// Output term on the first Mo rows.
	if s.hasOut() {
		att := &attnOp[T]{opBase: opBase{name: "Attention"}, att: c.att, arity: 3, rope: c.rope,
			norm: newHeadNorm[T](s.Attn.KNorm, s.Attn.NormEps), mo: c.mo, kv: c.kv}
		args := gorgonia.Nodes{mat("Qs", c.qs, c.mo, c.qd), kh, vh}
		if slices.Max(c.s.OutWindows()) > 0 { // the original branch's keys and values
			att.arity = 5
			args = append(args, mat("Kr", c.kr, c.mo, c.kv), mat("Vo", c.vo, c.mo, c.kv))
		}
		// MSE of the output Ô·Woᵀ against O·Woᵀ, as (Ô − O)·G·(Ô − O)ᵀ
		// with G = Woᵀ·Wo: one (Mo, QD, QD) product a step where the output
		// and its gradient took two of (Mo, D, QD), and the error is formed
		// before the projection instead of as a difference of two
		// projections.
		o := apply(att, args...)
		c.mseO = &mseOp[T]{opBase: opBase{name: "MSE(out)"}, w: s.LambdaOut, gram: c.gram, count: c.mo * c.d, y: c.gy}
		cost = gorgonia.Must(gorgonia.Add(cost, apply(c.mseO, o, mat("O", c.ot, c.mo, c.qd))))
	}

	grads, err := gorgonia.Grad(cost, learn...)
	if err != nil {
		return nil, fmt.Errorf("graph: differentiating the layer loss: %w", err)
	}
	for i, gn := range grads {
		// The gradient ops write straight into the Grad slices.
		op, ok := gn.Op().(*gemmOp[T])
		if !ok {
			return nil, fmt.Errorf("graph: gradient of %s is a %T node, want the factor's gemm", kv.Names[i], gn.Op())
		}
		op.out.data = c.grads[i]
		op.out.t = tensor.New(tensor.WithShape(gn.Shape()...), tensor.WithBacking(c.grads[i]))
	}
	outs := append(gorgonia.Nodes{cost}, grads...)
	prog, locMap, err := gorgonia.CompileFunction(g, g.ExactSubgraphRoots(outs...).Inputs(), outs)
	if err != nil {
		return nil, fmt.Errorf("graph: compiling the layer graph: %w", err)
	}
	c.vm = gorgonia.NewTapeMachine(g, gorgonia.WithPrecompiled(prog, locMap))
	c.freeze(c.wq, c.wk, c.wv, c.gram)
	return c, nil
}

// freeze tells linalg that these float32 operands do not change until
// thaw, so that bf16 products round them once (linalg.Freeze).
func (c *core[T]) freeze(xs ...[]T) {
	for _, x := range xs {
		if x32, ok := any(x).([]float32); ok {
			linalg.Freeze(x32)
		}
	}
}

// thaw ends every freeze of c.
func (c *core[T]) thaw() {
	for _, x := range [][]T{c.wq, c.wk, c.wv, c.gram, c.x} {
		if x32, ok := any(x).([]float32); ok {
			linalg.Thaw(x32)
		}
	}
}

// load copies x into the graph input and computes everything that does not
// depend on the factors: the K and V targets and, with out, the normed,
// rotated and scaled queries, the normed and rotated original keys and the
// original attention output.
func (c *core[T]) load(x []float32, out bool) error {
	return c.loadTargets(x, nil, nil, out)
}

// loadTargets is load with the K and V targets given (k, v (M, KV), the
// batch's rows of X·Wkᵀ + bk and X·Wvᵀ + bv), or computed when nil.
func (c *core[T]) loadTargets(x, k, v []float32, out bool) error {
	if len(x) != c.m*c.d {
		return fmt.Errorf("graph: input has %d values, want %d = %d rows × %d", len(x), c.m*c.d, c.m, c.d)
	}
	if k != nil && (len(k) != c.m*c.kv || len(v) != c.m*c.kv) {
		return fmt.Errorf("graph: targets have %d and %d values, want %d = %d rows × %d", len(k), len(v), c.m*c.kv, c.m, c.kv)
	}
	if xs, ok := any(c.x).([]float32); ok {
		copy(xs, x)
	} else {
		convert(c.x, x)
	}
	c.freeze(c.x) // new contents: what was derived from the old is dropped
	if k != nil {
		convert(c.kt, k)
		convert(c.vt, v)
	} else {
		linear(c.kt, c.x, c.wk, c.bk, c.m, c.kv, c.d)
		linear(c.vt, c.x, c.wv, c.bv, c.m, c.kv, c.d)
	}
	c.ms[0] = sumSq(c.kt) / float64(len(c.kt))
	c.ms[1] = sumSq(c.vt) / float64(len(c.vt))
	if !out {
		return nil
	}
	linear(c.qs, c.x[:c.mo*c.d], c.wq, c.bq, c.mo, c.qd, c.d)
	if c.qNorm != nil {
		c.qNorm.forward(c.qs, c.qs)
	}
	c.rope.applyScaled(c.qs, c.qs, c.mo, c.qd, false, T(c.s.Attn.Scale))
	c.attnKeys(c.kr, c.kt)
	c.orig.Forward(c.ot, c.qs, c.kr, c.vo, nil, nil)
	return nil
}

// attnKeys writes the keys attention reads, RoPE(KNorm(k)) (Mo, KV), for
// the first Mo rows of k (pre-norm, pre-RoPE).
func (c *core[T]) attnKeys(dst, k []T) {
	src := k[:c.mo*c.kv]
	if c.kNorm != nil {
		c.kNorm.forward(dst, src)
		src = dst
	}
	c.rope.apply(dst, src, c.mo, c.kv, false)
}

// loss assembles a Loss; OutRel only with rel (Eval), which computes the
// output target's mean square c.ms[2].
func (c *core[T]) loss(k, v, out float64, hasOut, rel bool) Loss {
	l := Loss{KV: k + v, KRel: k / c.ms[0], VRel: v / c.ms[1]}
	if hasOut {
		l.Out = out
		if rel {
			l.OutRel = out / c.ms[2]
		}
	}
	l.Total = c.s.LambdaKV*l.KV + c.s.LambdaOut*l.Out
	return l
}

func (c *core[T]) run(x, k, v []float32) (Loss, error) {
	if err := c.loadTargets(x, k, v, c.s.hasOut()); err != nil {
		return Loss{}, err
	}
	c.loaded = true
	return c.step()
}

// step runs the graph on the loaded batch.
func (c *core[T]) step() (Loss, error) {
	if !c.loaded {
		return Loss{}, errors.New("graph: Rerun before any Run")
	}
	err := c.vm.RunAll()
	c.vm.Reset()
	if err != nil {
		return Loss{}, fmt.Errorf("graph: running the layer graph: %w", err)
	}
	var out float64
	if c.mseO != nil {
		out = c.mseO.last
	}
	return c.loss(c.mseK.last, c.mseV.last, out, c.s.hasOut(), false), nil
}

func (c *core[T]) eval(x []float32) (Loss, error) {
	hasOut := c.s.OutSeqs > 0
	if err := c.load(x, hasOut); err != nil {
		return Loss{}, err
	}
	c.loaded = hasOut == c.s.hasOut() // Rerun needs what Run would have loaded
	s := c.s
	grow := func(b *[]T, n int) []T {
		if len(*b) != n {
			*b = make([]T, n)
		}
		return *b
	}
	ck, cv := grow(&c.ck, c.m*s.KRank), grow(&c.cv, c.m*s.VRank)
	kh, vh := grow(&c.kh, c.m*c.kv), grow(&c.vh, c.m*c.kv)
	linear(ck, c.x, c.vals[0], nil, c.m, s.KRank, c.d)
	linear(cv, c.x, c.vals[2], nil, c.m, s.VRank, c.d)
	if c.fqK != nil {
		if err := c.fqK.run(ck, ck); err != nil {
			return Loss{}, err
		}
	}
	if c.fqV != nil {
		if err := c.fqV.run(cv, cv); err != nil {
			return Loss{}, err
		}
	}
	linear(kh, ck, c.vals[1], c.bk, c.m, c.kv, s.KRank)
	linear(vh, cv, c.vals[3], c.bv, c.m, c.kv, s.VRank)
	k := sqDiffSum(kh, c.kt) / float64(len(kh))
	v := sqDiffSum(vh, c.vt) / float64(len(vh))
	var out float64
	if hasOut {
		// the target's mean square, mean (O·Woᵀ)², for OutRel (Run and
		// Rerun leave it out: a (Mo, QD, QD) product per batch)
		c.ms[2] = quadForm(c.gy, c.ot, c.gram, c.mo, c.qd) / float64(c.mo*c.d)
		khr, ob := grow(&c.khr, c.mo*c.kv), grow(&c.ob, c.mo*c.qd)
		c.attnKeys(khr, kh)
		c.att.Forward(ob, c.qs, khr, vh, c.kr, c.vo)
		subtract(ob, ob, c.ot)
		out = quadForm(c.gy, ob, c.gram, c.mo, c.qd) / float64(c.mo*c.d) // as MSE(out) in the graph
	}
	return c.loss(k, v, out, hasOut, true), nil
}

func sqDiffSum[T float](a, b []T) float64 {
	var s float64
	b = b[:len(a)]
	for i, v := range a {
		d := float64(v - b[i])
		s += d * d
	}
	return s
}
