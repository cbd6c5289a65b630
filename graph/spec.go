package graph

import (
	"errors"
	"fmt"
	"math"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/quant"
)

// LayerSpec describes one decoder layer's objective. Weights are row-major
// [out, in] float32 and are never written.
type LayerSpec struct {
	Hidden int // D
	// Attn is the layer's attention rule (heads, RoPE frequencies and
	// attention factor, scale, soft-cap, sliding window, q/k norms): the
	// output term computes exactly the attention it describes.
	Attn model.Attention

	Wq        []float32 // (QD, D)
	Wk, Wv    []float32 // (KV, D)
	Wo        []float32 // (D, QD)
	Bq        []float32 // (QD) optional bias (Qwen2), nil if absent
	Bk, Bv    []float32 // (KV) optional biases, nil if absent
	KRank     int       // Rk
	VRank     int       // Rv
	Seqs      int       // N: X is (N·T, D)
	Tokens    int       // T
	OutSeqs   int       // No: the first No sequences feed the output term (0 = none)
	LambdaKV  float64   // weight of MSE(K, K̂) + MSE(V, V̂)
	LambdaOut float64   // weight of MSE(out, out̂)
	OutWindow int       // W: 0 = every key/value reconstructed in out̂; W > 0 = bi-branch rule
	// OutWindowAlt is a second W the output term switches to with
	// Layer.SetOutWindow (--out-window-alt; 0 = none).
	OutWindowAlt int
	WindowMode   kv.WindowMode // how W is applied
	Quant        kv.Quant      // quantisation-aware training of Ck, Cv (zero value: off)
}

// KVDim is Hkv·Dh.
func (s LayerSpec) KVDim() int { return s.Attn.KVHeads * s.Attn.HeadDim }

// QDim is H·Dh.
func (s LayerSpec) QDim() int { return s.Attn.Heads * s.Attn.HeadDim }

// Rows is N·T, the rows of one batch.
func (s LayerSpec) Rows() int { return s.Seqs * s.Tokens }

// OutWindows are the bi-branch windows the output term's attention can run
// at (Layer.SetOutWindow): OutWindow, then OutWindowAlt when it is another.
func (s LayerSpec) OutWindows() []int {
	if w := s.OutWindowAlt; w > 0 && w != s.OutWindow {
		return []int{s.OutWindow, w}
	}
	return []int{s.OutWindow}
}

// hasOut reports whether Run builds and trains the output term.
func (s LayerSpec) hasOut() bool { return s.OutSeqs > 0 && s.LambdaOut > 0 }

// Param is one learnable with live backing slices: Value is read by the
// graph on every Run and may be updated in place by an optimiser; Grad is
// overwritten by every Run.
type Param struct {
	Name  string
	Value []float32
	Grad  []float32
}

// Loss reports one batch. KV = MSE(K, K̂) + MSE(V, V̂), Out = MSE(out, out̂)
// (0 when there is no output term); *Rel divide each MSE by the mean square
// of its target. Total = LambdaKV·KV + LambdaOut·Out. OutRel is Eval's
// only: the output target's mean square costs a (Mo, QD, QD) product per
// batch, which Run and Rerun (training steps) do not spend; they leave it 0.
type Loss struct {
	Total, KV, Out     float64
	KRel, VRel, OutRel float64
}

// ErrSpec is wrapped by every error that NewLayer returns for an invalid spec.
var ErrSpec = errors.New("graph: invalid layer spec")

func specErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrSpec}, args...)...)
}

// validate checks shapes, weights, λ, the attention rule and the
// quantisation setting.
func (s LayerSpec) validate(init kv.Factors) error {
	a := s.Attn
	switch {
	case s.Hidden <= 0 || a.Heads <= 0 || a.KVHeads <= 0 || a.HeadDim <= 0:
		return specErr("hidden %d, heads %d, kv heads %d, head dim %d must be positive", s.Hidden, a.Heads, a.KVHeads, a.HeadDim)
	case a.Heads%a.KVHeads != 0:
		return specErr("heads %d not a multiple of kv heads %d", a.Heads, a.KVHeads)
	case a.HeadDim%2 != 0:
		return specErr("head dim %d must be even for RoPE", a.HeadDim)
	case s.KRank <= 0 || s.VRank <= 0:
		return specErr("ranks k %d, v %d must be positive", s.KRank, s.VRank)
	case s.Seqs <= 0 || s.Tokens <= 0:
		return specErr("batch shape %d sequences × %d tokens must be positive", s.Seqs, s.Tokens)
	case s.OutSeqs < 0 || s.OutSeqs > s.Seqs:
		return specErr("out seqs %d not in [0, %d]", s.OutSeqs, s.Seqs)
	case math.IsNaN(s.LambdaKV) || math.IsNaN(s.LambdaOut) || s.LambdaKV < 0 || s.LambdaOut < 0:
		return specErr("lambdas kv %g, out %g must be non-negative", s.LambdaKV, s.LambdaOut)
	case s.LambdaKV == 0 && s.LambdaOut == 0:
		return specErr("lambda kv and lambda out are both zero")
	case s.LambdaOut > 0 && s.OutSeqs == 0:
		return specErr("lambda out %g needs out seqs > 0", s.LambdaOut)
	case s.OutWindow < 0 || s.OutWindowAlt < 0:
		return specErr("out windows %d, %d must be non-negative", s.OutWindow, s.OutWindowAlt)
	case !s.WindowMode.Valid():
		return specErr("unknown window mode %d", int(s.WindowMode))
	}
	if s.OutSeqs > 0 {
		if err := validAttention(a); err != nil {
			return err
		}
	}
	d, kvd, qd := s.Hidden, s.KVDim(), s.QDim()
	mats := []struct {
		name string
		got  []float32
		want int
		opt  bool
	}{
		{"Wq", s.Wq, qd * d, s.OutSeqs == 0},
		{"Wk", s.Wk, kvd * d, false},
		{"Wv", s.Wv, kvd * d, false},
		{"Wo", s.Wo, d * qd, s.OutSeqs == 0},
		{"Bq", s.Bq, qd, true},
		{"Bk", s.Bk, kvd, true},
		{"Bv", s.Bv, kvd, true},
		{"Ak", init.Ak, s.KRank * d, false},
		{"Bk factor", init.Bk, kvd * s.KRank, false},
		{"Av", init.Av, s.VRank * d, false},
		{"Bv factor", init.Bv, kvd * s.VRank, false},
	}
	for _, m := range mats {
		if m.got == nil && m.opt {
			continue
		}
		if len(m.got) != m.want {
			return specErr("%s has %d values, want %d", m.name, len(m.got), m.want)
		}
	}
	k, _, err := s.Quant.Specs(s.KRank, s.VRank, a.KVHeads)
	if err != nil {
		return specErr("quantisation: %v", err)
	}
	if k.Enabled() && k.Grouping == quant.PerChannel && s.Tokens%k.GroupSize != 0 {
		return specErr("per-channel key quant window %d must divide tokens %d", k.GroupSize, s.Tokens)
	}
	return nil
}

// validAttention checks the parts of the attention rule the output term
// reads beyond the head shape.
func validAttention(a model.Attention) error {
	r := a.Rope
	switch {
	case len(r.InvFreq) != a.HeadDim/2:
		return specErr("rope has %d inverse frequencies, want head dim / 2 = %d", len(r.InvFreq), a.HeadDim/2)
	case !(r.AttentionFactor >= 0) || math.IsInf(r.AttentionFactor, 0):
		return specErr("rope attention factor %g must be finite and non-negative (0 = 1)", r.AttentionFactor)
	case !(a.Scale > 0) || math.IsInf(float64(a.Scale), 0):
		return specErr("attention scale %g must be positive and finite", a.Scale)
	case !(a.SoftCap >= 0) || math.IsInf(float64(a.SoftCap), 0):
		return specErr("attention soft-cap %g must be finite and non-negative (0 = off)", a.SoftCap)
	case a.Window < 0:
		return specErr("sliding window %d must be non-negative (0 = off)", a.Window)
	case a.QNorm != nil && len(a.QNorm) != a.HeadDim || a.KNorm != nil && len(a.KNorm) != a.HeadDim:
		return specErr("q/k norm weights have %d / %d values, want head dim %d", len(a.QNorm), len(a.KNorm), a.HeadDim)
	case (a.QNorm != nil || a.KNorm != nil) && !(a.NormEps > 0):
		return specErr("q/k norm epsilon %g must be positive", a.NormEps)
	}
	for i, f := range r.InvFreq {
		if !(f >= 0) || math.IsInf(f, 0) {
			return specErr("rope inverse frequency %d = %g must be finite and non-negative", i, f)
		}
	}
	return nil
}
