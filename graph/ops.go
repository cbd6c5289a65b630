package graph

import (
	"fmt"
	"hash"
	"hash/fnv"

	"github.com/chewxy/hm"
	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/cskv/cskv/attn"
)

// The custom gorgonia ops of the layer objective. Each op instance belongs to
// one node, owns its output buffer and reuses it on every step (the tape
// machine drops its registers on Reset, so nothing else keeps a reference
// across steps). None of them overwrites its inputs. Ops that only appear in
// the backward graph do not implement SymDiff.

// buf is an op-owned output buffer with its tensor header.
type buf[T float] struct {
	data []T
	t    *tensor.Dense
}

func (b *buf[T]) get(rows, cols int) (*tensor.Dense, []T) {
	n := rows * cols
	if b.t == nil || b.t.Shape()[0] != rows || b.t.Shape()[1] != cols {
		b.data = make([]T, n)
		b.t = tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(b.data))
	}
	return b.t, b.data
}

// data returns the backing slice of a matrix value.
func data[T float](v gorgonia.Value) ([]T, error) {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("graph: want *tensor.Dense, got %T", v)
	}
	s, ok := d.Data().([]T)
	if !ok {
		return nil, fmt.Errorf("graph: tensor of %v, want %T", d.Dtype(), s)
	}
	return s, nil
}

// unary returns the data of a one-input op's matrix input and the op's
// output buffer of the same shape.
func unary[T float](in gorgonia.Value, out *buf[T]) (x []T, t *tensor.Dense, y []T, err error) {
	if x, err = data[T](in); err != nil {
		return nil, nil, nil, err
	}
	t, y = out.get(in.Shape()[0], in.Shape()[1])
	return x, t, y, nil
}

// data2 is data for the two operands of a product.
func data2[T float](x, y gorgonia.Value) (a, b []T, err error) {
	if a, err = data[T](x); err != nil {
		return nil, nil, err
	}
	b, err = data[T](y)
	return a, b, err
}

// scalar returns the value of a scalar (or one-element tensor).
func scalar(v gorgonia.Value) (float64, error) {
	switch x := v.(type) {
	case *gorgonia.F32:
		return float64(*x), nil
	case *gorgonia.F64:
		return float64(*x), nil
	case *tensor.Dense:
		if x.Size() == 1 {
			switch s := x.Data().(type) {
			case []float32:
				return float64(s[0]), nil
			case []float64:
				return s[0], nil
			case float32:
				return float64(s), nil
			case float64:
				return s, nil
			}
		}
	}
	return 0, fmt.Errorf("graph: want a scalar, got %T", v)
}

func newScalar[T float](v float64) gorgonia.Value {
	var z T
	if _, ok := any(z).(float32); ok {
		return gorgonia.NewF32(float32(v))
	}
	return gorgonia.NewF64(v)
}

func dims(d gorgonia.DimSizer, axis int) int {
	n, err := d.DimSize(axis)
	if err != nil {
		return -1
	}
	return n
}

var (
	tvA  = hm.TypeVariable('a')
	mat2 = gorgonia.TensorType{Dims: 2, Of: tvA}
)

// opBase supplies the methods every op here shares.
type opBase struct{ name string }

func (o *opBase) ReturnsPtr() bool      { return false }
func (o *opBase) CallsExtern() bool     { return false }
func (o *opBase) OverwritesInput() int  { return -1 }
func (o *opBase) String() string        { return o.name }
func (o *opBase) WriteHash(h hash.Hash) { fmt.Fprintf(h, "%s@%p", o.name, o) }
func (o *opBase) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}

// sameShape supplies Arity, Type and InferShape of a one-input op whose
// output has its input's shape (rows, cols).
type sameShape struct{}

func (sameShape) Arity() int    { return 1 }
func (sameShape) Type() hm.Type { return hm.NewFnType(mat2, mat2) }
func (sameShape) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{dims(in[0], 0), dims(in[0], 1)}, nil
}

// ---------------------------------------------------------------------------
// linOp: Y = A·Bᵀ (+ bias): A (m, k), B (n, k), Y (m, n). bias is a frozen
// constant (n). diff says which inputs are differentiated (a constant input
// gets no gradient node at all).

type linOp[T float] struct {
	opBase
	bias []T
	diff [2]bool
	out  buf[T]
}

func newLinOp[T float](name string, bias []T, diffA, diffB bool) *linOp[T] {
	return &linOp[T]{opBase: opBase{name: name}, bias: bias, diff: [2]bool{diffA, diffB}}
}

func (o *linOp[T]) Arity() int    { return 2 }
func (o *linOp[T]) Type() hm.Type { return hm.NewFnType(mat2, mat2, mat2) }
func (o *linOp[T]) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	if len(in) != 2 || dims(in[0], 1) != dims(in[1], 1) {
		return nil, fmt.Errorf("%s: inner dimensions of %v and %v differ", o.name, in[0], in[1])
	}
	return tensor.Shape{dims(in[0], 0), dims(in[1], 0)}, nil
}

func (o *linOp[T]) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	a, b, err := data2[T](in[0], in[1])
	if err != nil {
		return nil, err
	}
	m, k, n := in[0].Shape()[0], in[0].Shape()[1], in[1].Shape()[0]
	t, y := o.out.get(m, n)
	linear(y, a, b, o.bias, m, n, k)
	return t, nil
}

func (o *linOp[T]) DiffWRT(int) []bool { return o.diff[:] }

func (o *linOp[T]) SymDiff(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	res := make(gorgonia.Nodes, 2)
	var err error
	if o.diff[0] { // dA = dY·B
		if res[0], err = gorgonia.ApplyOp(&gemmOp[T]{opBase: opBase{name: o.name + ".dA"}}, grad, in[1]); err != nil {
			return nil, err
		}
	}
	if o.diff[1] { // dB = dYᵀ·A
		if res[1], err = gorgonia.ApplyOp(&gemmOp[T]{opBase: opBase{name: o.name + ".dB"}, tA: true}, grad, in[0]); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// gemmOp: C = op(A)·op(B), backward graph only.
type gemmOp[T float] struct {
	opBase
	tA, tB bool
	out    buf[T]
}

func (o *gemmOp[T]) Arity() int    { return 2 }
func (o *gemmOp[T]) Type() hm.Type { return hm.NewFnType(mat2, mat2, mat2) }
func (o *gemmOp[T]) shape(a, b gorgonia.DimSizer) (m, k, n int) {
	m, k = dims(a, 0), dims(a, 1)
	if o.tA {
		m, k = k, m
	}
	k2, n := dims(b, 0), dims(b, 1)
	if o.tB {
		k2, n = n, k2
	}
	if k != k2 {
		return -1, -1, -1
	}
	return m, k, n
}
func (o *gemmOp[T]) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	m, _, n := o.shape(in[0], in[1])
	if m < 0 {
		return nil, fmt.Errorf("%s: shapes %v and %v do not multiply", o.name, in[0], in[1])
	}
	return tensor.Shape{m, n}, nil
}

func (o *gemmOp[T]) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	a, b, err := data2[T](in[0], in[1])
	if err != nil {
		return nil, err
	}
	m, k, n := o.shape(in[0].Shape(), in[1].Shape())
	t, c := o.out.get(m, n)
	attn.Gemm(o.tA, o.tB, m, n, k, 1, a, in[0].Shape()[1], b, in[1].Shape()[1], 0, c, n)
	return t, nil
}

// ---------------------------------------------------------------------------
// mseOp: L = w·mean((P − Y)²) for a prediction P and a constant target Y;
// under a metric G (gram not nil) the mean of the errors (P − Y)·Woᵀ that
// G = Woᵀ·Wo stands for, Σ (P − Y)·G·(P − Y)ᵀ / count (gram, quadForm).
type mseOp[T float] struct {
	opBase
	w     float64
	last  float64 // unweighted MSE of the last Do
	diff  []T     // P − Y of the last Do
	grad  buf[T]
	gram  []T // (n, n) for P of n columns, or nil
	count int // under gram: the values averaged over (Mo·D)
	y     []T // under gram: (P − Y)·G of the last Do, shape of P
}

func (o *mseOp[T]) Arity() int    { return 2 }
func (o *mseOp[T]) Type() hm.Type { return hm.NewFnType(mat2, mat2, tvA) }
func (o *mseOp[T]) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return tensor.ScalarShape(), nil
}

func (o *mseOp[T]) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	p, err := data[T](in[0])
	if err != nil {
		return nil, err
	}
	y, err := data[T](in[1])
	if err != nil {
		return nil, err
	}
	if len(p) != len(y) {
		return nil, fmt.Errorf("%s: prediction has %d values, target %d", o.name, len(p), len(y))
	}
	if len(o.diff) != len(p) {
		o.diff = make([]T, len(p))
	}
	if o.gram != nil {
		rows, cols := in[0].Shape()[0], in[0].Shape()[1]
		if len(o.y) != len(p) || len(o.gram) != cols*cols {
			return nil, fmt.Errorf("%s: prediction (%d, %d) against a metric of %d values and a product buffer of %d", o.name, rows, cols, len(o.gram), len(o.y))
		}
		subtract(o.diff, p, y)
		o.last = quadForm(o.y, o.diff, o.gram, rows, cols) / float64(o.count)
	} else {
		o.last = sqDiff(o.diff, p, y) / float64(len(p))
	}
	return newScalar[T](o.w * o.last), nil
}

func (o *mseOp[T]) DiffWRT(int) []bool { return []bool{true, false} }

func (o *mseOp[T]) SymDiff(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	g, err := gorgonia.ApplyOp(&mseGradOp[T]{opBase: opBase{name: o.name + ".grad"}, fwd: o}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	return gorgonia.Nodes{g, nil}, nil
}

// mseGradOp: dP = 2·w·g·(P − Y)/n from the forward's stored difference;
// under a metric 2·w·g·(P − Y)·G/count from the forward's product.
type mseGradOp[T float] struct {
	opBase
	fwd *mseOp[T]
}

func (o *mseGradOp[T]) Arity() int    { return 3 }
func (o *mseGradOp[T]) Type() hm.Type { return hm.NewFnType(mat2, mat2, tvA, mat2) }
func (o *mseGradOp[T]) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{dims(in[0], 0), dims(in[0], 1)}, nil
}

func (o *mseGradOp[T]) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	g, err := scalar(in[2])
	if err != nil {
		return nil, err
	}
	sh := in[0].Shape()
	t, d := o.fwd.grad.get(sh[0], sh[1])
	if len(o.fwd.diff) != len(d) {
		return nil, fmt.Errorf("%s: forward did not run", o.name)
	}
	src, n := o.fwd.diff, len(d)
	if o.fwd.gram != nil {
		src, n = o.fwd.y, o.fwd.count
	}
	c := T(2 * o.fwd.w * g / float64(n))
	split(len(d), func(lo, hi int) float64 {
		for i, v := range src[lo:hi] {
			d[lo+i] = c * v
		}
		return 0
	})
	return t, nil
}

// ---------------------------------------------------------------------------
// attnOp: the output term's attention. Inputs: Qs (Mo, QD) normed, rotated
// and scaled queries (constant), K̂ and V̂ (M, KV) reconstructed keys and
// values before the key norm and RoPE (only the first Mo rows are read), and
// when the bi-branch window is on, the original normed and rotated keys Kr
// and values Vo (Mo, KV) (constants). Output: the concatenated head outputs
// (Mo, QD). The keys attention reads are RoPE(KNorm(K̂)).

// kernelRef is the output term's attention kernel in use, shared by the
// layer (Layer.SetOutWindow switches it) and its attention ops, which hold
// it and not the layer: a reference from the graph to the layer's buffers
// kept a closed layer's memory alive into the next layer's training.
type kernelRef[T float] struct{ *attn.Kernel[T] }

type attnOp[T float] struct {
	opBase
	att    *kernelRef[T]
	arity  int // 5 with the original branch's inputs (some window > 0), else 3
	rope   *ropeTable[T]
	norm   *headNorm[T] // the key norm (nil when the layer has none)
	mo, kv int
	khr    []T // (Mo, KV) RoPE(KNorm(K̂)) of the last forward
	out    buf[T]
}

func (o *attnOp[T]) Arity() int { return o.arity }

func (o *attnOp[T]) Type() hm.Type { return matFn(o.Arity()) }

// matFn is the type of an op taking arity matrices and returning one.
func matFn(arity int) hm.Type {
	ts := make([]hm.Type, arity+1)
	for i := range ts {
		ts[i] = mat2
	}
	return hm.NewFnType(ts...)
}

func (o *attnOp[T]) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{dims(in[0], 0), dims(in[0], 1)}, nil
}

// inputs unpacks q, kh, vh, ko, vo.
func (o *attnOp[T]) inputs(in []gorgonia.Value) (q, kh, vh, ko, vo []T, err error) {
	all := make([][]T, 5)
	for i := 0; i < o.Arity(); i++ {
		if all[i], err = data[T](in[i]); err != nil {
			return
		}
	}
	return all[0], all[1], all[2], all[3], all[4], nil
}

func (o *attnOp[T]) forward(out, q, kh, vh, ko, vo []T) {
	if len(o.khr) != o.mo*o.kv {
		o.khr = make([]T, o.mo*o.kv)
	}
	src := kh[:o.mo*o.kv]
	if o.norm != nil {
		o.norm.forward(o.khr, src)
		src = o.khr
	}
	o.rope.apply(o.khr, src, o.mo, o.kv, false)
	o.att.Forward(out, q, o.khr, vh, ko, vo)
}

func (o *attnOp[T]) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	q, kh, vh, ko, vo, err := o.inputs(in)
	if err != nil {
		return nil, err
	}
	t, out := o.out.get(in[0].Shape()[0], in[0].Shape()[1])
	o.forward(out, q, kh, vh, ko, vo)
	return t, nil
}

func (o *attnOp[T]) DiffWRT(n int) []bool {
	d := make([]bool, n)
	d[1], d[2] = true, true
	return d
}

func (o *attnOp[T]) SymDiff(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	bk := &attnGradOp[T]{opBase: opBase{name: o.name + ".dK"}, fwd: o}
	args := append(append(gorgonia.Nodes{}, in...), out, grad)
	dk, err := gorgonia.ApplyOp(bk, args...)
	if err != nil {
		return nil, err
	}
	dv, err := gorgonia.ApplyOp(&attnGradVOp[T]{opBase: opBase{name: o.name + ".dV"}, src: bk}, dk)
	if err != nil {
		return nil, err
	}
	res := make(gorgonia.Nodes, len(in))
	res[1], res[2] = dk, dv
	return res, nil
}

// attnGradOp computes both input gradients of attnOp; it returns dK̂ (M, KV)
// and keeps dV̂ (M, KV) for attnGradVOp, which reads it next.
type attnGradOp[T float] struct {
	opBase
	fwd    *attnOp[T]
	dk, dv buf[T]
}

func (o *attnGradOp[T]) Arity() int    { return o.fwd.Arity() + 2 }
func (o *attnGradOp[T]) Type() hm.Type { return matFn(o.Arity()) }
func (o *attnGradOp[T]) InferShape(in ...gorgonia.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{dims(in[1], 0), dims(in[1], 1)}, nil
}

func (o *attnGradOp[T]) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	f := o.fwd
	q, kh, vh, ko, vo, err := f.inputs(in)
	if err != nil {
		return nil, err
	}
	n := f.Arity()
	out, err := data[T](in[n])
	if err != nil {
		return nil, err
	}
	dout, err := data[T](in[n+1])
	if err != nil {
		return nil, err
	}
	rows := in[1].Shape()[0]
	tk, dk := o.dk.get(rows, f.kv)
	_, dv := o.dv.get(rows, f.kv)
	f.att.Backward(dk, dv, q, f.khr, vh, ko, vo, out, dout)
	clear(dk[f.mo*f.kv:])
	clear(dv[f.mo*f.kv:])
	f.rope.apply(dk, dk, f.mo, f.kv, true)
	if f.norm != nil {
		f.norm.backward(dk[:f.mo*f.kv], kh[:f.mo*f.kv])
	}
	return tk, nil
}

// attnGradVOp hands out the dV̂ that its attnGradOp input computed.
type attnGradVOp[T float] struct {
	opBase
	sameShape
	src *attnGradOp[T]
}

func (o *attnGradVOp[T]) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	if o.src.dv.t == nil {
		return nil, fmt.Errorf("%s: gradient op did not run", o.name)
	}
	return o.src.dv.t, nil
}
