package model

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas/gonum"

	"github.com/cskv/cskv/attn"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
)

// RMSNorm writes out = x / rms(x) · w for n rows of width d.
func RMSNorm(out, x, w []float32, n, d int, eps float64) {
	splitRows(n, d, func(r0, r1 int) {
		for r := r0; r < r1; r++ {
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
	})
}

// splitRows runs f on the rows [r0, r1) of n rows of width w, split between
// the cores when they hold at least minSplit elements. Every row is computed
// on its own, so the bits do not depend on the split.
func splitRows(n, w int, f func(r0, r1 int)) {
	parts := min(runtime.GOMAXPROCS(0), n)
	if n*w < minSplit || parts <= 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	for k := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(k*n/parts, (k+1)*n/parts)
		}()
	}
	wg.Wait()
}

// minSplit is the fewest elements splitRows shares between the cores (a 7B
// layer on 512 tokens has 2M per norm and 5.6M per gate; stories260K's
// forward on 512 tokens, 32K per norm, stays on one).
const minSplit = 1 << 18

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

// EmbedTokens gathers token embeddings into h (len(tokens), D), times
// Config.EmbedScale when it is set.
func (m *Model) EmbedTokens(h []float32, tokens []int) error {
	d := m.Config.Hidden
	for i, t := range tokens {
		if t < 0 || t >= m.Config.Vocab {
			return fmt.Errorf("token id %d at position %d outside the vocabulary [0, %d)", t, i, m.Config.Vocab)
		}
		row := h[i*d : (i+1)*d]
		copy(row, m.Embed[t*d:(t+1)*d])
		if sc := m.Config.EmbedScale; sc != 0 {
			for j := range row {
				row[j] *= sc
			}
		}
	}
	return nil
}

// AttnInput returns X = RMSNorm(h) with the attention norm: the input of the
// K/V projections that CSKV compresses. h and X are (n, D).
func (b *Block) AttnInput(c Config, x, h []float32, n int) {
	RMSNorm(x, h, b.AttnNorm, n, c.Hidden, c.RMSEps)
}

// KVOverride replaces a layer's keys and values in attention. Replace fills
// Kr, Vr (n, KV) (before the key norm and RoPE, which the block then applies
// to them as to K) from the attention input X (n, D) of nSeq sequences of T
// tokens; it may update error statistics given the original K, V (also
// before the norm), and may round K, V in place to emulate a cache's
// storage. Window gives the bi-branch rule: for query t, keys from
// mode.OriginalFrom(t, w) to t keep their original K/V. The layer's own
// sliding window (Block.Attn.Window) hides keys on top of it.
type KVOverride interface {
	Replace(kr, vr, x, k, v []float32, nSeq, T int) error
	Window() (w int, mode kv.WindowMode)
}

// Forward advances the residual stream h (nSeq·T, D) through this block in
// place; rope must be the table of b.Attn.Rope covering T positions. With ov
// non-nil, attention uses its replacement keys/values under its rule (the
// replacements get the key norm and RoPE like the original keys).
func (b *Block) Forward(c Config, h []float32, nSeq, T int, rope *RopeTable, ov KVOverride) error {
	return b.forward(c, h, nSeq, T, rope, ov, b.work)
}

// forward is Forward with its temporaries taken from w (nil: allocated).
func (b *Block) forward(c Config, h []float32, nSeq, T int, rope *RopeTable, ov KVOverride, w *workspace) error {
	n := nSeq * T
	D, QD, KV, F := c.Hidden, c.QDim(), c.KVDim(), c.FFN
	a := &b.Attn
	tmp := w.temps()
	defer tmp.done()
	x := tmp.get(n * D)
	b.AttnInput(c, x, h, n)
	q := tmp.get(n * QD)
	k := tmp.get(n * KV)
	v := tmp.get(n * KV)
	Linear(q, x, b.Wq, b.Bq, n, QD, D)
	Linear(k, x, b.Wk, b.Bk, n, KV, D)
	Linear(v, x, b.Wv, b.Bv, n, KV, D)
	var kr, vr []float32
	if ov != nil {
		kr, vr = tmp.zeros(n*KV), tmp.zeros(n*KV)
		if err := ov.Replace(kr, vr, x, k, v, nSeq, T); err != nil {
			return err
		}
		a.NormK(kr, n)
	}
	a.NormQ(q, n)
	a.NormK(k, n)
	for s := 0; s < nSeq; s++ {
		rope.Apply(q[s*T*QD:(s+1)*T*QD], T, c.Heads, 0)
		rope.Apply(k[s*T*KV:(s+1)*T*KV], T, c.KVHeads, 0)
		if kr != nil {
			rope.Apply(kr[s*T*KV:(s+1)*T*KV], T, c.KVHeads, 0)
		}
	}
	att := tmp.get(n * QD)
	attention(a, att, q, k, v, kr, vr, nSeq, T, ov, tmp.attn())
	b.residual(c, h, att, b.Wo, b.PostAttnNorm, n, QD, tmp)
	// feed-forward
	RMSNorm(x, h, b.FFNNorm, n, D, c.RMSEps)
	g := tmp.get(n * F)
	u := tmp.get(n * F)
	linalg.MatMulT(g, x, b.Wgate, n, F, D, false)
	linalg.MatMulT(u, x, b.Wup, n, F, D, false)
	gate(g, u, activations[c.Activation], D >= wideHidden)
	b.residual(c, h, g, b.Wdown, b.PostFFNNorm, n, F, tmp)
	return nil
}

// workspace keeps Block.Forward's temporaries, the tiled attention's tiles
// among them, between the calls on a frozen block (Block.Freeze), and from
// layer to layer in Model.Forward: each call
// after the first reuses their pages instead of faulting in and zeroing new
// ones (86 MB at a 7B layer on 512 tokens, measured at a fifth of that
// forward's time in bf16).
type workspace struct {
	mu   sync.Mutex
	bufs [][]float32
	attn attn.Workspace[float32] // the tiled attention's tiles
}

// temps hands out one Forward call's temporaries, in the same order on
// every call: from a workspace when there is one and no other call holds
// it, else newly allocated.
type temps struct {
	w *workspace // nil: allocate
	i int
}

func (w *workspace) temps() *temps {
	if w != nil && w.mu.TryLock() {
		return &temps{w: w}
	}
	return &temps{}
}

// get returns n floats whose contents the caller overwrites.
func (t *temps) get(n int) []float32 {
	if t.w == nil {
		return make([]float32, n)
	}
	if t.i == len(t.w.bufs) {
		t.w.bufs = append(t.w.bufs, nil)
	}
	if cap(t.w.bufs[t.i]) < n {
		t.w.bufs[t.i] = make([]float32, n)
	}
	t.i++
	return t.w.bufs[t.i-1][:n]
}

// attn is the attention tiles of the call: the workspace's, or nil (the
// kernel allocates its own).
func (t *temps) attn() *attn.Workspace[float32] {
	if t.w == nil {
		return nil
	}
	return &t.w.attn
}

// zeros returns n zeroed floats.
func (t *temps) zeros(n int) []float32 {
	s := t.get(n)
	if t.w != nil {
		clear(s)
	}
	return s
}

func (t *temps) done() {
	if t.w != nil {
		t.w.mu.Unlock()
	}
}

// gate sets g[i] = act(g[i])·u[i], in vector instructions for wide layers
// whose activation has them, split between the cores from minSplit
// elements on (an elementwise loop: the same bits either way).
func gate(g, u []float32, act gateAct, wide bool) {
	rng := func(g, u []float32) { gateRange(g, u, act.f) }
	if wide && act.wide != nil {
		rng = act.wide
	}
	splitRows(len(g), 1, func(lo, hi int) { rng(g[lo:hi], u[lo:hi]) })
}

func gateRange(g, u []float32, act func(float32) float32) {
	u = u[:len(g)]
	for i, gv := range g {
		g[i] = act(gv) * u[i]
	}
}

// residual adds a sub-layer's output y·Wᵀ (y (n, in), W (D, in)) to h (n,
// D), through the post-norm when the family has one.
func (b *Block) residual(c Config, h, y, w, postNorm []float32, n, in int, tmp *temps) {
	D := c.Hidden
	if postNorm == nil {
		linalg.MatMulT(h, y, w, n, D, in, true)
		return
	}
	o := tmp.get(n * D)
	linalg.MatMulT(o, y, w, n, D, in, false)
	RMSNorm(o, o, postNorm, n, D, c.RMSEps)
	for i, x := range o {
		h[i] += x
	}
}

// TiledWidth is the query width (heads·Dh) from which the forward's
// attention runs as tiled matrix products (package attn) rather than row by
// row: narrower models (stories260K) keep the row kernel and its sums.
const TiledWidth = 1024

// attention computes causal grouped-query attention under the layer's rule a
// for every (sequence, head) pair. q (n, QD) and k, v (n, KV) are post-RoPE
// (v has no RoPE); kr, vr are replacements (or nil) used for the keys before
// the override's window; out (n, QD). Wide layers run the tiled kernel of
// package attn (q is scaled in place); narrower ones, and every layer in
// exact mode (linalg.SetExact), do each query row in one pass by attendRow,
// the kernel token-by-token decoding uses too, in parallel over pairs.
func attention(a *Attention, out, q, k, v, kr, vr []float32, nSeq, T int, ov KVOverride, ws *attn.Workspace[float32]) {
	dh := a.HeadDim
	QD, KV := a.Heads*dh, a.KVHeads*dh
	group := a.Heads / a.KVHeads
	w, mode := 0, kv.WindowBlock
	if ov != nil {
		w, mode = ov.Window()
	}
	if QD >= TiledWidth && !linalg.Exact() {
		splitRows(nSeq*T, QD, func(r0, r1 int) {
			for i := range q[r0*QD : r1*QD] {
				q[r0*QD+i] *= a.Scale
			}
		})
		kh, vh, ko, vo := k, v, []float32(nil), []float32(nil)
		if ov != nil { // replacements before the window, originals in it
			kh, vh, ko, vo = kr, vr, k, v
		}
		attn.New[float32](nSeq, T, a.KernelRule(), w, mode).Use(ws).Forward(out, q, kh, vh, ko, vo)
		return
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
					attendRow(a, out[row+h*dh:row+(h+1)*dh], scores, q[row+h*dh:row+(h+1)*dh], mk, mv, T, a.FirstKey(t), t)
				}
			}
		}()
	}
	for s := 0; s < nSeq; s++ {
		for h := 0; h < a.Heads; h++ {
			jobs <- [2]int{s, h}
		}
	}
	close(jobs)
	wg.Wait()
}

// attendRow computes one head's attention output ot (Dh) for the query qt
// (Dh) at position t over keys and values j0..t, given transposed as kt, vt
// (Dh, stride), under the rule a (scale, soft-cap). scores needs t+1 entries
// of scratch.
func attendRow(a *Attention, ot, scores, qt, kt, vt []float32, stride, j0, t int) {
	scale := a.Scale
	n := t + 1 - j0
	sc := scores[:n]
	clear(sc)
	for i, x := range qt {
		blas32.Saxpy(n, x*scale, kt[i*stride+j0:i*stride+t+1], 1, sc, 1)
	}
	if a.SoftCap > 0 {
		for j, x := range sc {
			sc[j] = a.Cap(x)
		}
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
		ot[i] = linalg.Dot(vt[i*stride+j0:i*stride+t+1], sc) * inv
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
	if sc := c.FinalSoftCap; sc > 0 {
		for i, z := range logits[:n*c.Vocab] {
			logits[i] = float32(sc * math.Tanh(float64(z)/sc))
		}
	}
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
	var rope *RopeTable
	ws := &workspace{} // every layer's temporaries have the same shapes
	for l := 0; l < c.Layers; l++ {
		b, err := m.Block(l)
		if err != nil {
			return nil, err
		}
		if rope == nil { // every layer of the supported families shares one rotary embedding
			rope = NewRopeTable(T, b.Attn.Rope)
		}
		var ov KVOverride
		if ovs != nil {
			ov = ovs[l]
		}
		if err := b.forward(c, h, nSeq, T, rope, ov, ws); err != nil {
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
