package model

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas/gonum"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
)

// RMSNorm writes out = x / rms(x) · w for n rows of width d.
func RMSNorm(out, x, w []float32, n, d int, eps float64) {
	for r := 0; r < n; r++ {
		row := x[r*d : (r+1)*d]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(ss/float64(d)+eps))
		o := out[r*d : (r+1)*d]
		for i, v := range row {
			o[i] = v * inv * w[i]
		}
	}
}

// RopeTable holds cos/sin for positions [0, T) and head-dim pairs.
type RopeTable struct {
	Cos, Sin []float32 // (T, Dh/2)
	half     int
}

// NewRopeTable computes θ_i = pos·base^(−2i/Dh) for the rotate-half layout.
func NewRopeTable(T, dh int, base float64) *RopeTable {
	half := dh / 2
	r := &RopeTable{Cos: make([]float32, T*half), Sin: make([]float32, T*half), half: half}
	for p := 0; p < T; p++ {
		for i := 0; i < half; i++ {
			freq := math.Pow(base, -2*float64(i)/float64(dh))
			a := float64(p) * freq
			r.Cos[p*half+i] = float32(math.Cos(a))
			r.Sin[p*half+i] = float32(math.Sin(a))
		}
	}
	return r
}

// Apply rotates x (T, heads·Dh) in place, row t at position pos0+t.
func (r *RopeTable) Apply(x []float32, T, heads, pos0 int) {
	half := r.half
	dh := 2 * half
	for t := 0; t < T; t++ {
		cs := r.Cos[(pos0+t)*half : (pos0+t+1)*half]
		sn := r.Sin[(pos0+t)*half : (pos0+t+1)*half]
		row := x[t*heads*dh : (t+1)*heads*dh]
		for h := 0; h < heads; h++ {
			v := row[h*dh : (h+1)*dh]
			for i := 0; i < half; i++ {
				a, b := v[i], v[i+half]
				v[i] = a*cs[i] - b*sn[i]
				v[i+half] = b*cs[i] + a*sn[i]
			}
		}
	}
}

// Linear computes y = x·Wᵀ (+ bias) for x (n, in), W (out, in), y (n, out).
func Linear(y, x, w, bias []float32, n, out, in int) {
	linalg.MatMulT(y, x, w, n, out, in, false)
	if bias != nil {
		for r := 0; r < n; r++ {
			row := y[r*out : (r+1)*out]
			for i := range row {
				row[i] += bias[i]
			}
		}
	}
}

// Embed gathers token embeddings into h (len(tokens), D).
func (m *Model) EmbedTokens(h []float32, tokens []int) error {
	d := m.Config.Hidden
	for i, t := range tokens {
		if t < 0 || t >= m.Config.Vocab {
			return fmt.Errorf("token id %d at position %d outside the vocabulary [0, %d)", t, i, m.Config.Vocab)
		}
		copy(h[i*d:(i+1)*d], m.Embed[t*d:(t+1)*d])
	}
	return nil
}

// AttnInput returns X = RMSNorm(h) with the attention norm: the input of the
// K/V projections that CSKV compresses. h and X are (n, D).
func (b *Block) AttnInput(c Config, x, h []float32, n int) {
	RMSNorm(x, h, b.AttnNorm, n, c.Hidden, c.RMSEps)
}

// KVOverride replaces a layer's keys and values in attention. Replace fills
// Kr, Vr (n, KV) (pre-RoPE) from the attention input X (n, D) of nSeq
// sequences of T tokens; it may update error statistics given the original
// K, V, and may round K, V in place to emulate a cache's storage. Window gives the bi-branch rule: for query t, keys from
// mode.OriginalFrom(t, w) to t keep their original K/V.
type KVOverride interface {
	Replace(kr, vr, x, k, v []float32, nSeq, T int) error
	Window() (w int, mode kv.WindowMode)
}

// Forward advances the residual stream h (nSeq·T, D) through this block in
// place; rope must cover T positions. With ov non-nil, attention uses its
// replacement keys/values under its rule.
func (b *Block) Forward(c Config, h []float32, nSeq, T int, rope *RopeTable, ov KVOverride) error {
	n := nSeq * T
	D, QD, KV, F := c.Hidden, c.QDim(), c.KVDim(), c.FFN
	x := make([]float32, n*D)
	b.AttnInput(c, x, h, n)
	q := make([]float32, n*QD)
	k := make([]float32, n*KV)
	v := make([]float32, n*KV)
	Linear(q, x, b.Wq, b.Bq, n, QD, D)
	Linear(k, x, b.Wk, b.Bk, n, KV, D)
	Linear(v, x, b.Wv, b.Bv, n, KV, D)
	var kr, vr []float32
	if ov != nil {
		kr = make([]float32, n*KV)
		vr = make([]float32, n*KV)
		if err := ov.Replace(kr, vr, x, k, v, nSeq, T); err != nil {
			return err
		}
	}
	for s := 0; s < nSeq; s++ {
		rope.Apply(q[s*T*QD:(s+1)*T*QD], T, c.Heads, 0)
		rope.Apply(k[s*T*KV:(s+1)*T*KV], T, c.KVHeads, 0)
		if kr != nil {
			rope.Apply(kr[s*T*KV:(s+1)*T*KV], T, c.KVHeads, 0)
		}
	}
	att := make([]float32, n*QD)
	attention(c, att, q, k, v, kr, vr, nSeq, T, ov)
	// h += att·Woᵀ
	linalg.MatMulT(h, att, b.Wo, n, D, QD, true)
	// feed-forward
	RMSNorm(x, h, b.FFNNorm, n, D, c.RMSEps)
	g := make([]float32, n*F)
	u := make([]float32, n*F)
	linalg.MatMulT(g, x, b.Wgate, n, F, D, false)
	linalg.MatMulT(u, x, b.Wup, n, F, D, false)
	for i, gv := range g {
		g[i] = gv / (1 + float32(math.Exp(float64(-gv)))) * u[i]
	}
	linalg.MatMulT(h, g, b.Wdown, n, D, F, true)
	return nil
}

// attention computes causal grouped-query attention for every (sequence,
// head) pair, in parallel over pairs. q (n, QD) and k, v (n, KV) are
// post-RoPE (v has no RoPE); kr, vr are replacements (or nil) used for the
// keys before the override's window; out (n, QD). Each query row is done in
// one pass by attendRow, the kernel token-by-token decoding uses too.
func attention(c Config, out, q, k, v, kr, vr []float32, nSeq, T int, ov KVOverride) {
	QD, KV, dh := c.QDim(), c.KVDim(), c.HeadDim
	group := c.Heads / c.KVHeads
	w, mode := 0, kv.WindowBlock
	if ov != nil {
		w, mode = ov.Window()
	}
	jobs := make(chan [2]int)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scores := make([]float32, T)
			mk := make([]float32, dh*T) // (Dh, T) keys the current row sees, transposed
			mv := make([]float32, dh*T) // (Dh, T) values, transposed
			for job := range jobs {
				s, h := job[0], job[1]
				base := s*T*KV + h/group*dh
				transposeHead(mk, k[base:], T, dh, KV, 0, T)
				transposeHead(mv, v[base:], T, dh, KV, 0, T)
				lo := 0 // keys [0, lo) hold the replacement
				for t := 0; t < T; t++ {
					if ov != nil { // OriginalFrom never decreases with t
						if next := min(mode.OriginalFrom(t, w), t+1); next > lo {
							transposeHead(mk, kr[base:], T, dh, KV, lo, next)
							transposeHead(mv, vr[base:], T, dh, KV, lo, next)
							lo = next
						}
					}
					row := (s*T + t) * QD
					attendRow(out[row+h*dh:row+(h+1)*dh], scores, q[row+h*dh:row+(h+1)*dh], mk, mv, T, t)
				}
			}
		}()
	}
	for s := 0; s < nSeq; s++ {
		for h := 0; h < c.Heads; h++ {
			jobs <- [2]int{s, h}
		}
	}
	close(jobs)
	wg.Wait()
}

// attendRow computes one head's attention output ot (Dh) for the query qt
// (Dh) at position t over keys and values 0..t, given transposed as kt, vt
// (Dh, stride). scores needs t+1 entries of scratch.
func attendRow(ot, scores, qt, kt, vt []float32, stride, t int) {
	scale := float32(1 / math.Sqrt(float64(len(qt))))
	sc := scores[:t+1]
	clear(sc)
	for i, x := range qt {
		blas32.Saxpy(t+1, x*scale, kt[i*stride:i*stride+t+1], 1, sc, 1)
	}
	mx := sc[0]
	for _, x := range sc {
		mx = max(mx, x)
	}
	var sum float32
	for j, x := range sc {
		e := expf(x - mx)
		sc[j] = e
		sum += e
	}
	inv := 1 / sum
	for i := range ot {
		ot[i] = linalg.Dot(vt[i*stride:i*stride+t+1], sc) * inv
	}
}

// blas32 provides the SIMD vector kernels of the attention rows (gonum's
// assembly saxpy/sdot; short vectors are not worth a cgo call).
var blas32 gonum.Implementation

// transposeHead copies rows [t0, t1) of the (·, dh) head slice of a
// row-major (·, stride) matrix into columns [t0, t1) of dst (dh, T).
func transposeHead(dst, src []float32, T, dh, stride, t0, t1 int) {
	for t := t0; t < t1; t++ {
		row := src[t*stride : t*stride+dh]
		for i, x := range row {
			dst[i*T+t] = x
		}
	}
}

// expf is e^x for x ≤ 0 in float32 (relative error below 2e-7): x = k·ln2 + r
// with |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^k by exponent bits.
func expf(x float32) float32 {
	if x < -87 {
		return 0
	}
	const ln2Hi, ln2Lo, log2e = 0.693359375, -2.12194440e-4, 1.44269504088896341
	k := float32(math.Floor(float64(x*log2e + 0.5)))
	r := x - k*ln2Hi - k*ln2Lo
	p := float32(1.0 / 720)
	p = p*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r + 1
	p = p*r + 1
	return p * math.Float32frombits(uint32(int32(k)+127)<<23)
}

// Logits computes the final norm and output projection: logits (n, V) from
// the residual stream h (n, D).
func (m *Model) Logits(logits, h []float32, n int) {
	c := m.Config
	x := make([]float32, n*c.Hidden)
	RMSNorm(x, h, m.OutputNorm, n, c.Hidden, c.RMSEps)
	linalg.MatMulT(logits, x, m.Output, n, c.Vocab, c.Hidden, false)
}

// Forward runs sequences (each of the same length T) through the whole model
// and returns the logits (nSeq·T, V). ovs, if non-nil, gives a KVOverride per
// layer (nil entries leave a layer uncompressed).
func (m *Model) Forward(seqs [][]int, ovs []KVOverride) ([]float32, error) {
	c := m.Config
	nSeq := len(seqs)
	if nSeq == 0 {
		return nil, fmt.Errorf("forward: no sequences")
	}
	T := len(seqs[0])
	h := make([]float32, nSeq*T*c.Hidden)
	for s, seq := range seqs {
		if len(seq) != T {
			return nil, fmt.Errorf("forward: sequence %d has %d tokens, want %d", s, len(seq), T)
		}
		if err := m.EmbedTokens(h[s*T*c.Hidden:], seq); err != nil {
			return nil, fmt.Errorf("sequence %d: %w", s, err)
		}
	}
	rope := NewRopeTable(T, c.HeadDim, c.RopeBase)
	for l := 0; l < c.Layers; l++ {
		b, err := m.Block(l)
		if err != nil {
			return nil, err
		}
		var ov KVOverride
		if ovs != nil {
			ov = ovs[l]
		}
		if err := b.Forward(c, h, nSeq, T, rope, ov); err != nil {
			return nil, fmt.Errorf("layer %d: %w", l, err)
		}
	}
	logits := make([]float32, nSeq*T*c.Vocab)
	m.Logits(logits, h, nSeq*T)
	return logits, nil
}

// NLL returns the summed negative log-likelihood of targets given logits
// (n, V): Σ_t −log softmax(logits_t)[targets_t], skipping targets < 0.
func NLL(logits []float32, targets []int, V int) (sum float64, count int) {
	for t, y := range targets {
		if y < 0 {
			continue
		}
		row := logits[t*V : (t+1)*V]
		mx := row[0]
		for _, v := range row {
			if v > mx {
				mx = v
			}
		}
		var z float64
		for _, v := range row {
			z += math.Exp(float64(v - mx))
		}
		sum += math.Log(z) + float64(mx) - float64(row[y])
		count++
	}
	return sum, count
}
