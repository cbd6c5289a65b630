package graph

import (
	"math"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/quant"
)

// An independent plain-Go float64 implementation of the layer loss, written
// with straightforward loops and without any code from the package: RoPE with
// math.Cos/Sin per element, softmax per row, attention per (t, head, j).

type refLayer struct {
	s                          LayerSpec
	x                          []float64 // (M, D)
	wq, wk, wv, wo, bq, bk, bv []float64
	// fq, when set, fake-quantises the compressed features of one sequence
	// (side 0 = keys, 1 = values) in place.
	fq func(side int, c []float64, tokens, cols int)
}

func f64s(v []float32) []float64 {
	if v == nil {
		return nil
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func newRef(s LayerSpec, x []float32) *refLayer {
	return &refLayer{s: s, x: f64s(x), wq: f64s(s.Wq), wk: f64s(s.Wk), wv: f64s(s.Wv), wo: f64s(s.Wo),
		bq: f64s(s.Bq), bk: f64s(s.Bk), bv: f64s(s.Bv)}
}

// refLin is y = x·wᵀ + b: x (rows, in), w (out, in).
func refLin(x []float64, rows, in int, w []float64, out int, b []float64) []float64 {
	y := make([]float64, rows*out)
	for r := 0; r < rows; r++ {
		for o := 0; o < out; o++ {
			var s float64
			for i := 0; i < in; i++ {
				s += x[r*in+i] * w[o*in+i]
			}
			if b != nil {
				s += b[o]
			}
			y[r*out+o] = s
		}
	}
	return y
}

// refRope rotates one head vector v (d) at position pos, rotate-half layout,
// by the angles pos·InvFreq[i], cos and sin times the attention factor.
func refRope(v []float64, pos int, r model.Rope) []float64 {
	d := len(v)
	h := d / 2
	af := r.AttentionFactor
	if af == 0 {
		af = 1
	}
	out := make([]float64, d)
	for i := 0; i < h; i++ {
		th := float64(pos) * r.InvFreq[i]
		c, s := math.Cos(th)*af, math.Sin(th)*af
		out[i] = v[i]*c - v[i+h]*s
		out[i+h] = v[i+h]*c + v[i]*s
	}
	return out
}

// refNorm is v/√(mean v² + eps)·w, or v itself when w is nil.
func refNorm(v []float64, w []float32, eps float64) []float64 {
	if w == nil {
		return v
	}
	var ss float64
	for _, x := range v {
		ss += x * x
	}
	r := 1 / math.Sqrt(ss/float64(len(v))+eps)
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x * r * float64(w[i])
	}
	return out
}

// original reports whether key j is the original one for query t in out̂.
func (r *refLayer) original(t, j int) bool {
	w := r.s.OutWindow
	switch {
	case w == 0:
		return false
	case r.s.WindowMode == kv.WindowBlock:
		return j/w == t/w
	default:
		return t-j < w
	}
}

// attn returns the attention block output (T, D) of sequence seq; keys and
// values come from (ko, vo) where pick(t, j) is true, else from (kr, vr).
func (r *refLayer) attn(seq int, ko, vo, kr, vr []float64, pick func(t, j int) bool) []float64 {
	s := r.s
	a := s.Attn
	T, D, Dh, H := s.Tokens, s.Hidden, a.HeadDim, a.Heads
	kv, qd := s.KVDim(), s.QDim()
	xs := r.x[seq*T*D : (seq+1)*T*D]
	q := refLin(xs, T, D, r.wq, qd, r.bq)
	heads := make([]float64, T*qd)
	for t := 0; t < T; t++ {
		for h := 0; h < H; h++ {
			g := h / (H / a.KVHeads)
			qv := refRope(refNorm(q[t*qd+h*Dh:t*qd+(h+1)*Dh], a.QNorm, a.NormEps), t, a.Rope)
			scores := make([]float64, t+1)
			j0 := 0 // the layer's sliding window: t − j < Window
			if a.Window > 0 {
				j0 = max(0, t-a.Window+1)
			}
			for j := range scores {
				scores[j] = math.Inf(-1)
			}
			for j := j0; j <= t; j++ {
				k := kr
				if pick(t, j) {
					k = ko
				}
				row := seq*T + j
				kvec := refRope(refNorm(k[row*kv+g*Dh:row*kv+(g+1)*Dh], a.KNorm, a.NormEps), j, a.Rope)
				var dot float64
				for i := range qv {
					dot += qv[i] * kvec[i]
				}
				scores[j] = dot * float64(a.Scale)
				if c := float64(a.SoftCap); c > 0 {
					scores[j] = c * math.Tanh(scores[j]/c)
				}
			}
			mx := math.Inf(-1)
			for _, v := range scores {
				mx = math.Max(mx, v)
			}
			var sum float64
			for j := range scores {
				scores[j] = math.Exp(scores[j] - mx)
				sum += scores[j]
			}
			for j := 0; j <= t; j++ {
				v := vr
				if pick(t, j) {
					v = vo
				}
				row := seq*T + j
				for i := 0; i < Dh; i++ {
					heads[t*qd+h*Dh+i] += scores[j] / sum * v[row*kv+g*Dh+i]
				}
			}
		}
	}
	return refLin(heads, T, qd, r.wo, D, nil)
}

func mse(a, b []float64) float64 {
	var s float64
	for i := range a {
		d := a[i] - b[i]
		s += d * d
	}
	return s / float64(len(a))
}

// loss returns (Total, KV, Out) for factors f = {Ak, Bk, Av, Bv}.
func (r *refLayer) loss(f [4][]float64) (total, kv, out float64) {
	s := r.s
	M, D, KVD, T := s.Rows(), s.Hidden, s.KVDim(), s.Tokens
	k := refLin(r.x, M, D, r.wk, KVD, r.bk)
	v := refLin(r.x, M, D, r.wv, KVD, r.bv)
	ck := refLin(r.x, M, D, f[0], s.KRank, nil)
	cv := refLin(r.x, M, D, f[2], s.VRank, nil)
	if r.fq != nil {
		for q := 0; q < s.Seqs; q++ {
			r.fq(0, ck[q*T*s.KRank:(q+1)*T*s.KRank], T, s.KRank)
			r.fq(1, cv[q*T*s.VRank:(q+1)*T*s.VRank], T, s.VRank)
		}
	}
	kh := refLin(ck, M, s.KRank, f[1], KVD, r.bk)
	vh := refLin(cv, M, s.VRank, f[3], KVD, r.bv)
	kv = mse(kh, k) + mse(vh, v)
	if s.OutSeqs > 0 && s.LambdaOut > 0 {
		var num float64
		for q := 0; q < s.OutSeqs; q++ {
			want := r.attn(q, k, v, k, v, func(int, int) bool { return true })
			got := r.attn(q, k, v, kh, vh, r.original)
			num += mse(got, want) * float64(len(got))
		}
		out = num / float64(s.OutSeqs*T*D)
	}
	return s.LambdaKV*kv + s.LambdaOut*out, kv, out
}

// outMeanSquare is the mean square of the original attention output (the
// output term's target, after Wo) over the output sequences.
func (r *refLayer) outMeanSquare() float64 {
	s := r.s
	M, D, KVD := s.Rows(), s.Hidden, s.KVDim()
	k := refLin(r.x, M, D, r.wk, KVD, r.bk)
	v := refLin(r.x, M, D, r.wv, KVD, r.bv)
	var sum float64
	for q := 0; q < s.OutSeqs; q++ {
		for _, o := range r.attn(q, k, v, k, v, func(int, int) bool { return true }) {
			sum += o * o
		}
	}
	return sum / float64(s.OutSeqs*s.Tokens*D)
}

// refFakeQuant fake-quantises c with the key or value rule of s through
// package quant (in float32, as the graph does).
func refFakeQuant(s LayerSpec) func(side int, c []float64, tokens, cols int) {
	return func(side int, c []float64, tokens, cols int) {
		bits, group, grouping := s.Quant.KBits, s.KRank/s.Attn.KVHeads, quant.PerToken
		if side == 1 {
			bits, group = s.Quant.VBits, s.VRank/s.Attn.KVHeads
		} else if s.Quant.KPerChannel {
			group, grouping = s.Quant.QuantWindow, quant.PerChannel
		}
		if bits == 0 || bits == 16 {
			return
		}
		x := make([]float32, len(c))
		for i, v := range c {
			x[i] = float32(v)
		}
		y := make([]float32, len(c))
		spec := quant.Spec{Bits: bits, Grouping: grouping, GroupSize: group, ClampZero: s.Quant.ClampZero}
		if err := quant.FakeQuant(y, nil, x, tokens, cols, spec); err != nil {
			panic(err)
		}
		for i, v := range y {
			c[i] = float64(v)
		}
	}
}

func f32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
