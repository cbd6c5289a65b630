package graph

import (
	"fmt"

	"gorgonia.org/gorgonia"

	"github.com/cskv/cskv/quant"
)

// Quantisation-aware mode (docs/METHOD.md §4): the compressed features C (M, R)
// are fake-quantised per sequence with the rule of package quant; the
// gradient is straight-through inside each group's clip range and zero
// outside it.

// fakeQuant is the forward rule on one batch: dst = x̂ and mask (both (M,
// cols)), each sequence of tokens rows quantised on its own.
type fakeQuant[T float] struct {
	spec         quant.Spec
	tokens, cols int
	mask         []float32 // (M, cols) of the last run
	x32, y32     []float32 // float64 graphs only
}

func (f *fakeQuant[T]) run(dst, x []T) error {
	n := len(x)
	if len(f.mask) != n {
		f.mask = make([]float32, n)
	}
	seq := f.tokens * f.cols
	if n%seq != 0 {
		return fmt.Errorf("graph: fake-quant of %d values, not whole sequences of (%d, %d)", n, f.tokens, f.cols)
	}
	xs, ok := any(x).([]float32)
	ys, _ := any(dst).([]float32)
	if !ok {
		if len(f.x32) != n {
			f.x32, f.y32 = make([]float32, n), make([]float32, n)
		}
		convert(f.x32, x)
		xs, ys = f.x32, f.y32
	}
	for off := 0; off < n; off += seq {
		if err := quant.FakeQuant(ys[off:off+seq], f.mask[off:off+seq], xs[off:off+seq], f.tokens, f.cols, f.spec); err != nil {
			return fmt.Errorf("graph: fake-quant of sequence %d: %w", off/seq, err)
		}
	}
	if !ok {
		convert(dst, ys)
	}
	return nil
}

// fakeQuantOps is what the fake-quant op and its gradient share: the
// quantiser (the gradient reads the clip mask of its forward) and the output
// buffer.
type fakeQuantOps[T float] struct {
	opBase
	sameShape
	fq  *fakeQuant[T]
	out buf[T]
}

// fakeQuantOp: Ĉ = FakeQuant(C).
type fakeQuantOp[T float] struct{ fakeQuantOps[T] }

func newFakeQuantOp[T float](name string, fq *fakeQuant[T]) *fakeQuantOp[T] {
	return &fakeQuantOp[T]{fakeQuantOps[T]{opBase: opBase{name: name}, fq: fq}}
}

func (o *fakeQuantOp[T]) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	x, t, y, err := unary(in[0], &o.out)
	if err != nil {
		return nil, err
	}
	if err := o.fq.run(y, x); err != nil {
		return nil, err
	}
	return t, nil
}

func (o *fakeQuantOp[T]) DiffWRT(int) []bool { return []bool{true} }

func (o *fakeQuantOp[T]) SymDiff(in gorgonia.Nodes, out, grad *gorgonia.Node) (gorgonia.Nodes, error) {
	g, err := gorgonia.ApplyOp(&fakeQuantGradOp[T]{fakeQuantOps[T]{opBase: opBase{name: o.name + ".grad"}, fq: o.fq}}, grad)
	if err != nil {
		return nil, err
	}
	return gorgonia.Nodes{g}, nil
}

// fakeQuantGradOp: dC = mask ⊙ dĈ (straight-through, clipped).
type fakeQuantGradOp[T float] struct{ fakeQuantOps[T] }

func (o *fakeQuantGradOp[T]) Do(in ...gorgonia.Value) (gorgonia.Value, error) {
	g, t, d, err := unary(in[0], &o.out)
	if err != nil {
		return nil, err
	}
	if len(o.fq.mask) != len(g) {
		return nil, fmt.Errorf("%s: forward did not run", o.name)
	}
	for i, m := range o.fq.mask {
		d[i] = g[i] * T(m)
	}
	return t, nil
}
