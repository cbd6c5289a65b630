package model

import (
	"math"

	"github.com/cskv/cskv/attn"
)

// Attention is one layer's attention as every implementation in cskv must
// compute it: the frozen forward and the decoder here, the training graph's
// output term, the parallel compressed evaluation and the real cache. With
// the block's projections (biases Block.Bq/Bk/Bv may be nil) and the
// attention input x (D) of the token at position p:
//
//	q = Wq·x + Bq (H·Dh), k = Wk·x + Bk (Hkv·Dh), v = Wv·x + Bv (Hkv·Dh)
//	q_h ← RMSNorm(q_h)·QNorm, k_h ← RMSNorm(k_h)·KNorm   per head, when non-nil
//	q_h, k_h rotated at p by Rope (rotate-half pairs (i, i+Dh/2), cos and sin × Rope.AttentionFactor)
//	s_ij = Scale · q_i·k_j;  s_ij ← SoftCap·tanh(s_ij/SoftCap) when SoftCap > 0
//	query i sees key j iff j ≤ i and (Window == 0 or i − j < Window)
//	o_i = Σ_j softmax_j(s_ij)·v_j (query head h uses KV head h / (H/Hkv)), then Wo
//
// CSKV replaces k and v by their reconstructions from the cached features
// before everything else: k̂ = B_k·(A_k·x) + Bk, v̂ = B_v·(A_v·x) + Bv; the
// key norm and RoPE then apply to k̂ exactly as to k (keys are
// RoPE(KNorm(B_k·A_k·x))).
type Attention struct {
	Heads, KVHeads, HeadDim int
	Rope                    Rope
	Scale                   float32   // score multiplier: Dh^-½, or query_pre_attn_scalar^-½
	SoftCap                 float32   // 0 = no soft-capping
	Window                  int       // 0 = every earlier key
	QNorm, KNorm            []float32 // (Dh) effective per-head RMSNorm weights, nil when the family has none
	NormEps                 float64   // epsilon of QNorm and KNorm
}

// FirstKey is the first key position query i sees (keys FirstKey(i)..i).
func (a *Attention) FirstKey(i int) int {
	if a.Window > 0 {
		return max(0, i-a.Window+1)
	}
	return 0
}

// KernelRule is what the tiled attention kernel (package attn) needs of a.
func (a Attention) KernelRule() attn.Rule {
	return attn.Rule{Heads: a.Heads, KVHeads: a.KVHeads, HeadDim: a.HeadDim, SoftCap: a.SoftCap, Window: a.Window}
}

// NormQ applies QNorm to every head of q (n, H·Dh) in place (nothing when
// QNorm is nil).
func (a *Attention) NormQ(q []float32, n int) { headNorm(q, a.QNorm, n*a.Heads, a.HeadDim, a.NormEps) }

// NormK applies KNorm to every head of k (n, Hkv·Dh) in place (nothing when
// KNorm is nil).
func (a *Attention) NormK(k []float32, n int) {
	headNorm(k, a.KNorm, n*a.KVHeads, a.HeadDim, a.NormEps)
}

func headNorm(x, w []float32, rows, dh int, eps float64) {
	if w != nil {
		RMSNorm(x, x, w, rows, dh, eps)
	}
}

// Cap applies the soft-cap to one scaled score.
func (a *Attention) Cap(s float32) float32 {
	if a.SoftCap > 0 {
		return a.SoftCap * float32(math.Tanh(float64(s/a.SoftCap)))
	}
	return s
}
