package graph

import (
	"math"
	"testing"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/quant"
)

// TestQuantOff: 16 bits means no quantisation: the same loss and gradients
// as with quantisation unset, and no fake-quant node.
func TestQuantOff(t *testing.T) {
	c := lossCases[4]
	off := tinySpec(c, 1)
	on16 := off
	on16.Quant = kv.Quant{KBits: 16, VBits: 16, KPerChannel: true, QuantWindow: 4}
	f := RandomFactors(off, 2)
	x := RandomInput(off, 3)
	var losses [2]Loss
	var grads [2][]float32
	for i, s := range []LayerSpec{off, on16} {
		l, err := NewLayer(s, f)
		if err != nil {
			t.Fatal(err)
		}
		if l.c.fqK != nil || l.c.fqV != nil {
			t.Errorf("spec %d: fake-quant built with bits 16", i)
		}
		if losses[i], err = l.Run(x); err != nil {
			t.Fatal(err)
		}
		grads[i] = append([]float32(nil), l.Params()[0].Grad...)
		l.Close()
	}
	if losses[0] != losses[1] {
		t.Errorf("bits 16 loss %+v, off %+v", losses[1], losses[0])
	}
	for i := range grads[0] {
		if grads[0][i] != grads[1][i] {
			t.Fatalf("bits 16 gradient differs at %d", i)
		}
	}
}

var qatCases = []struct {
	name string
	q    kv.Quant
}{
	{"4-bit per-token", kv.Quant{KBits: 4, VBits: 4}},
	{"4-bit per-channel keys, 2-bit values, clamped zero", kv.Quant{KBits: 4, VBits: 2, KPerChannel: true, QuantWindow: 4, ClampZero: true}},
	{"3-bit keys only", kv.Quant{KBits: 3}},
}

// TestQATLoss: with QAT the float64 graph's loss (KV term and output term,
// bi-branch window 4) equals the reference with the features passed through
// quant.FakeQuant by hand (relative 1e-9), and differs from the unquantised
// loss.
func TestQATLoss(t *testing.T) {
	for i, qc := range qatCases {
		t.Run(qc.name, func(t *testing.T) {
			s := tinySpec(lossCases[6], uint64(70+i))
			s.Quant = qc.q
			f := RandomFactors(s, uint64(80+i))
			x := RandomInput(s, uint64(90+i))
			l := newCore64(t, s, f)
			got, err := l.run(x, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ref := newRef(s, x)
			plain, _, _ := ref.loss(factors64(f))
			ref.fq = refFakeQuant(s)
			total, kvLoss, out := ref.loss(factors64(f))
			if e := relErr(got.KV, kvLoss); e > 1e-9 {
				t.Errorf("QAT kv loss %.12g, hand %.12g", got.KV, kvLoss)
			}
			if e := relErr(got.Out, out); e > 1e-9 {
				t.Errorf("QAT out loss %.12g, hand %.12g", got.Out, out)
			}
			if relErr(total, plain) < 1e-6 {
				t.Errorf("quantisation did not change the loss (%g vs %g)", total, plain)
			}
			ev, err := l.eval(x)
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(ev.Total, got.Total); e > 1e-12 {
				t.Errorf("QAT Eval %.12g, Run %.12g", ev.Total, got.Total)
			}
		})
	}
}

// TestQATGradientMasked: the gradient of Ak is straight-through inside the
// clip range and zero outside it: dAk = (mask ⊙ dĈk)ᵀ·X with the mask from
// quant.FakeQuant, computed by hand here (relative 1e-10).
func TestQATGradientMasked(t *testing.T) {
	s := tinySpec(lossCases[0], 5)
	s.Quant = kv.Quant{KBits: 2, VBits: 4}
	f := RandomFactors(s, 6)
	x := RandomInput(s, 7)
	l := newCore64(t, s, f)
	if _, err := l.run(x, nil, nil); err != nil {
		t.Fatal(err)
	}
	got := l.grads[kv.Ak]

	M, D, R, KV, T := s.Rows(), s.Hidden, s.KRank, s.KVDim(), s.Tokens
	xs, ak, bk := f64s(x), f64s(f.Ak), f64s(f.Bk)
	ck := refLin(xs, M, D, ak, R, nil)
	c32 := f32s(ck)
	hat, mask := make([]float32, len(c32)), make([]float32, len(c32))
	spec := quant.Spec{Bits: 2, Grouping: quant.PerToken, GroupSize: R / s.Attn.KVHeads}
	for q := 0; q < s.Seqs; q++ {
		o := q * T * R
		if err := quant.FakeQuant(hat[o:o+T*R], mask[o:o+T*R], c32[o:o+T*R], T, R, spec); err != nil {
			t.Fatal(err)
		}
	}
	zeros := 0
	for _, m := range mask {
		if m == 0 {
			zeros++
		}
	}
	if zeros == 0 {
		t.Fatal("no element outside the clip range: the test cannot see the mask")
	}
	kh := refLin(f64s(hat), M, R, bk, KV, nil)
	k := refLin(xs, M, D, f64s(s.Wk), KV, nil)
	c := 2 * s.LambdaKV / float64(M*KV)
	dc := make([]float64, M*R) // dĈ = dK̂·Bk
	for r := 0; r < M; r++ {
		for o := 0; o < KV; o++ {
			dk := c * (kh[r*KV+o] - k[r*KV+o])
			for a := 0; a < R; a++ {
				dc[r*R+a] += dk * bk[o*R+a]
			}
		}
	}
	want, unmasked := make([]float64, R*D), make([]float64, R*D)
	for r := 0; r < M; r++ {
		for a := 0; a < R; a++ {
			for i := 0; i < D; i++ {
				want[a*D+i] += float64(mask[r*R+a]) * dc[r*R+a] * xs[r*D+i]
				unmasked[a*D+i] += dc[r*R+a] * xs[r*D+i]
			}
		}
	}
	if e := vecErr(got, want); e > 1e-10 {
		t.Errorf("dAk max rel err %.3g vs masked hand gradient (%d of %d masked)", e, zeros, len(mask))
	}
	if e := vecErr(got, unmasked); e < 1e-6 {
		t.Errorf("dAk equals the unmasked gradient (err %.3g)", e)
	}
	if math.IsNaN(got[0]) {
		t.Error("NaN gradient")
	}
}
