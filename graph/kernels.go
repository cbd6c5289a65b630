package graph

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

// float is the element type of a graph: float32 for training, float64 for
// gradient checks.
type float interface{ ~float32 | ~float64 }

// gemm is C = alpha·op(A)·op(B) + beta·C, row-major, through package linalg.
func gemm[T float](tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	switch cc := any(c).(type) {
	case []float32:
		linalg.Gemm32(tA, tB, m, n, k, float32(alpha), any(a).([]float32), lda, any(b).([]float32), ldb, float32(beta), cc, ldc)
	case []float64:
		linalg.Gemm64(tA, tB, m, n, k, float64(alpha), any(a).([]float64), lda, any(b).([]float64), ldb, float64(beta), cc, ldc)
	}
}

// gemmSerial is gemm on the calling thread alone (linalg.Gemm32Serial), for
// products issued from several workers at once.
func gemmSerial[T float](tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	switch cc := any(c).(type) {
	case []float32:
		linalg.Gemm32Serial(tA, tB, m, n, k, float32(alpha), any(a).([]float32), lda, any(b).([]float32), ldb, float32(beta), cc, ldc)
	case []float64:
		linalg.Gemm64(tA, tB, m, n, k, float64(alpha), any(a).([]float64), lda, any(b).([]float64), ldb, float64(beta), cc, ldc)
	}
}

// freeze declares float32 operands unchanged until the returned thaw, so
// that bf16 products round them once (linalg.Freeze).
func freeze[T float](xs ...[]T) (thaw func()) {
	var done [][]float32
	for _, x := range xs {
		if x32, ok := any(x).([]float32); ok && len(x32) > 0 {
			linalg.Freeze(x32)
			done = append(done, x32)
		}
	}
	return func() {
		for _, x := range done {
			linalg.Thaw(x)
		}
	}
}

// linear is Y = X·Wᵀ (+ bias on every row): X (m, k), W (n, k), Y (m, n).
func linear[T float](y, x, w, bias []T, m, n, k int) {
	gemm(false, true, m, n, k, 1, x, k, w, k, 0, y, n)
	if bias != nil {
		for i := 0; i < m; i++ {
			row := y[i*n : i*n+n]
			for j, b := range bias[:n] {
				row[j] += b
			}
		}
	}
}

// convert copies src into dst of another float type.
func convert[D, S float](dst []D, src []S) {
	for i, v := range src[:len(dst)] {
		dst[i] = D(v)
	}
}

// sqDiff stores diff = a − b and returns Σ diff² (accumulated in float64).
func sqDiff[T float](diff, a, b []T) float64 {
	var s float64
	b = b[:len(a)]
	diff = diff[:len(a)]
	for i, av := range a {
		d := av - b[i]
		diff[i] = d
		s += float64(d) * float64(d)
	}
	return s
}

// sumSq returns Σ x² in float64.
func sumSq[T float](x []T) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return s
}

// parallel runs fn(worker, i) for i in [0, n) on up to GOMAXPROCS workers and
// returns when all are done. worker < workers(n).
func parallel(n int, fn func(worker, i int)) {
	w := workers(n)
	if w <= 1 {
		for i := 0; i < n; i++ {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for k := 0; k < w; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(k, i)
			}
		}(k)
	}
	wg.Wait()
}

func workers(n int) int { return max(1, min(runtime.GOMAXPROCS(0), n)) }

// ropeTable holds, for every position and rotate-half pair i (Hugging Face
// convention), cos and sin of pos·InvFreq[i] times the attention factor of
// the layer's model.Rope, computed as model.NewRopeTable computes them.
type ropeTable[T float] struct {
	tokens, half int
	cos, sin     []T // (T, Dh/2)
}

func newRope[T float](tokens int, rope model.Rope) *ropeTable[T] {
	half := len(rope.InvFreq)
	af := rope.AttentionFactor
	if af == 0 {
		af = 1
	}
	r := &ropeTable[T]{tokens: tokens, half: half, cos: make([]T, tokens*half), sin: make([]T, tokens*half)}
	for i, inv := range rope.InvFreq {
		for p := 0; p < tokens; p++ {
			a := float64(p) * inv
			r.cos[p*half+i] = T(math.Cos(a) * af)
			r.sin[p*half+i] = T(math.Sin(a) * af)
		}
	}
	return r
}

// apply rotates every head of rows [0, rows) of src (rows, width) into dst
// (dst may be src): out[i] = x[i]·cos − x[i+h]·sin, out[i+h] = x[i+h]·cos +
// x[i]·sin, position = row mod T. inverse applies the transpose (the
// backward of apply; the inverse rotation when the attention factor is 1).
func (r *ropeTable[T]) apply(dst, src []T, rows, width int, inverse bool) {
	h := r.half
	for row := 0; row < rows; row++ {
		p := row % r.tokens
		cs := r.cos[p*h : p*h+h]
		sn := r.sin[p*h : p*h+h]
		s := src[row*width : row*width+width]
		d := dst[row*width : row*width+width]
		for off := 0; off < width; off += 2 * h {
			x1 := s[off : off+h]
			x2 := s[off+h : off+2*h]
			y1 := d[off : off+h]
			y2 := d[off+h : off+2*h]
			for i, c := range cs {
				a, b, sv := x1[i], x2[i], sn[i]
				if inverse {
					sv = -sv
				}
				y1[i] = a*c - b*sv
				y2[i] = b*c + a*sv
			}
		}
	}
}

// headNorm is the per-head RMSNorm of the layer's key or query norm
// (model.Attention.KNorm, QNorm): y = x/√(mean x² + eps)·w over each head's
// Dh values, as model.RMSNorm computes it. It keeps 1/rms of every head of
// its last forward for the backward.
type headNorm[T float] struct {
	w    []T // (Dh) effective weights
	eps  float64
	dh   int
	rstd []T // (rows·heads) 1/rms of the last forward
}

func newHeadNorm[T float](w []float32, eps float64) *headNorm[T] {
	if w == nil {
		return nil
	}
	n := &headNorm[T]{w: make([]T, len(w)), eps: eps, dh: len(w)}
	convert(n.w, w)
	return n
}

// forward normalises every head of src into dst (same length, a multiple of
// Dh; dst may be src).
func (n *headNorm[T]) forward(dst, src []T) {
	heads := len(src) / n.dh
	if len(n.rstd) != heads {
		n.rstd = make([]T, heads)
	}
	for h := 0; h < heads; h++ {
		x := src[h*n.dh : (h+1)*n.dh]
		var ss float64
		for _, v := range x {
			ss += float64(v) * float64(v)
		}
		r := T(1 / math.Sqrt(ss/float64(n.dh)+n.eps))
		n.rstd[h] = r
		y := dst[h*n.dh : (h+1)*n.dh]
		for i, v := range x {
			y[i] = v * r * n.w[i]
		}
	}
}

// backward turns dy, the gradient with respect to the last forward's output,
// into the gradient with respect to its input x, in place:
// dx = r·(w⊙dy) − r³·x·Σ(w⊙dy⊙x)/Dh per head.
func (n *headNorm[T]) backward(dy, x []T) {
	for h := range n.rstd {
		g := dy[h*n.dh : (h+1)*n.dh]
		xs := x[h*n.dh : (h+1)*n.dh]
		r := float64(n.rstd[h])
		var dot float64
		for i, v := range g {
			dot += float64(v) * float64(n.w[i]) * float64(xs[i])
		}
		c := r * r * r * dot / float64(n.dh)
		for i, v := range g {
			g[i] = T(r*float64(v)*float64(n.w[i]) - c*float64(xs[i]))
		}
	}
}

// softCap is c·tanh(s/c) (model.Attention.Cap); dSoftCap its derivative
// 1 − tanh²(s/c).
func softCap[T float](s, c T) T { return c * T(math.Tanh(float64(s/c))) }

func dSoftCap[T float](s, c T) T {
	th := math.Tanh(float64(s / c))
	return T(1 - th*th)
}

// expShift replaces x by exp(x − m) and returns the sum.
func expShift[T float](x []T, m T) T {
	switch xs := any(x).(type) {
	case []float32:
		return T(expShift32(xs, float32(m)))
	case []float64:
		m64 := float64(m)
		var s float64
		for i, v := range xs {
			e := math.Exp(v - m64)
			xs[i] = e
			s += e
		}
		return T(s)
	}
	return 0
}

// exp32 is exp for float32, about 1 ulp; inputs below expLo give the
// smallest normal float32 (≈ 1.2e-38) rather than 0 (see linalg.ExpShift).
func exp32(x float32) float32 {
	var one [1]float32
	one[0] = x
	expShift32(one[:], 0)
	return one[0]
}

// expShift32 replaces x by exp(x − m) and returns the sum (float32, about 1
// ulp): linalg.ExpShift.
func expShift32(x []float32, m float32) float32 { return linalg.ExpShift(x, m) }

// attention is causal grouped-query attention with the layer's rule (soft-cap
// and sliding window of a model.Attention), the bi-branch rule and a fused,
// numerically safe softmax. Q is already normed, rotated and scaled by the
// rule's Scale. Query t sees keys j in [first(t), t] (first from the
// layer's sliding window); of those, the original keys and values are the j
// ≥ lo = mode.OriginalFrom(t, window), the earlier ones the reconstructed
// keys (already normed and rotated). Scores are soft-capped before the mask.
//
// Work is split into tiles of block query positions of one unit: stack
// query heads of one KV group (1, or the whole group from stackWidth on).
// A tile's rows are its (position, head) pairs, position-major: row r is
// position t0 + r/stack of head unit·stack + r%stack, so that the stacked
// heads share one product with their keys. Tasks are (sequence, KV head)
// pairs, so that concurrent tasks write disjoint parts of the key and value
// gradients.
type attention[T float] struct {
	seqs, tokens, heads, kvHeads, headDim int
	softCap                               T   // 0 = off
	slide                                 int // the layer's sliding window (0 = every earlier key)
	window                                int
	mode                                  kv.WindowMode
	block                                 int   // query positions per tile
	stack                                 int   // query heads per tile (divides heads/kvHeads)
	keep                                  bool  // store the probabilities of forward for backward
	scratch                               [][]T // per worker
	store                                 []T   // kept probabilities, (N, units, per-unit layout)
	tileOff                               []int // offset of each tile inside one unit's store
	unitSize                              int   // store elements per (sequence, unit)
}

// keepBudget is the largest probability store (elements) that forward keeps
// for backward; above it backward recomputes the probabilities.
const keepBudget = 1 << 27 // 512 MiB of float32: the 8B and 7B shapes at 2048 tokens keep theirs

// stackWidth is the query width (heads·Dh) from which a tile stacks every
// query head of its KV group and its products run one per worker (on the
// worker's core, linalg.Gemm32Serial): products of block·group rows keep
// the matrix units busy, and the cores are not oversubscribed. Narrower
// layers (stories260K) keep one head per tile and the products and
// rounding they always had.
const stackWidth = 1024

// attnBlock is the query rows per tile: 64, or 256 from 1024 tokens on,
// where larger products keep the matrix units busy (fewer, larger calls).
func attnBlock(tokens int) int {
	if tokens >= 1024 {
		return 256
	}
	return min(64, tokens)
}

// newAttention is the attention of seqs sequences of tokens under the layer's
// rule r and the bi-branch window and mode.
func newAttention[T float](seqs, tokens int, r model.Attention, window int, mode kv.WindowMode) *attention[T] {
	stack := 1
	if r.Heads*r.HeadDim >= stackWidth {
		stack = r.Heads / r.KVHeads
	}
	return &attention[T]{seqs: seqs, tokens: tokens, heads: r.Heads, kvHeads: r.KVHeads, headDim: r.HeadDim,
		softCap: T(r.SoftCap), slide: r.Window, window: window, mode: mode, block: attnBlock(tokens), stack: stack}
}

// keys returns the key ranges of query t: reconstructed [first, lo),
// original [lo, t+1).
func (a *attention[T]) keys(t int) (first, lo int) {
	if a.slide > 0 {
		first = max(0, t-a.slide+1)
	}
	lo = max(min(a.mode.OriginalFrom(t, a.window), t+1), first)
	return first, lo
}

// band is the key range [b0, t1) of the original branch for the query tile
// [t0, t1); bw = t1 − b0 (0 when the window is off).
func (a *attention[T]) band(t0, t1 int) (b0, bw int) {
	if a.window <= 0 {
		return t1, 0
	}
	b0 = a.mode.OriginalFrom(t0, a.window)
	return b0, t1 - b0
}

// tile returns worker k's buffers, R = block·stack rows: p (R, T), po (R,
// block+W), dp (R, T), with the soft-cap sc (R, T) for the raw scores and,
// when stack > 1, qb and db (R, Dh) for a tile's gathered query and output
// gradient rows.
func (a *attention[T]) tile(k int) (p, po, dp, sc, qb, db []T) {
	nb, nt := a.block*a.stack, a.tokens
	bw := a.block + max(a.window, 0)
	ns, nq := 0, 0
	if a.softCap > 0 {
		ns = nb * nt
	}
	if a.stack > 1 {
		nq = nb * a.headDim
	}
	sizes := []int{nb * nt, nb * bw, nb * nt, ns, nq, nq}
	need := 0
	for _, n := range sizes {
		need += n
	}
	for len(a.scratch) <= k {
		a.scratch = append(a.scratch, nil)
	}
	if len(a.scratch[k]) < need {
		a.scratch[k] = make([]T, need)
	}
	s := a.scratch[k]
	var parts [6][]T
	for i, n := range sizes {
		parts[i], s = s[:n:n], s[n:]
	}
	return parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]
}

// prepare allocates the per-worker tiles and, when keep is set and it fits
// keepBudget, the probability store. It reports whether the store is used.
func (a *attention[T]) prepare() bool {
	for k := workers(a.seqs * a.kvHeads); k > 0; k-- {
		a.tile(k - 1)
	}
	if !a.keep {
		return false
	}
	if a.tileOff == nil {
		n := 0
		for t0 := 0; t0 < a.tokens; t0 += a.block {
			t1 := min(t0+a.block, a.tokens)
			_, bw := a.band(t0, t1)
			a.tileOff = append(a.tileOff, n)
			n += (t1 - t0) * a.stack * (t1 + bw)
		}
		a.unitSize = n
	}
	total := a.seqs * a.heads / a.stack * a.unitSize
	if total > keepBudget {
		return false
	}
	if len(a.store) != total {
		a.store = make([]T, total)
	}
	return true
}

// stored returns the kept probabilities of tile i of (sequence s, unit u).
func (a *attention[T]) stored(s, u, i, t0, t1 int) (p, po []T) {
	_, bw := a.band(t0, t1)
	off := (s*a.heads/a.stack+u)*a.unitSize + a.tileOff[i]
	r := (t1 - t0) * a.stack
	return a.store[off : off+r*t1], a.store[off+r*t1 : off+r*(t1+bw)]
}

// product is a tile's matrix product: on the worker's core when tiles
// stack heads and several workers run (gemmSerial), else gemm.
func (a *attention[T]) product(tA, tB bool, m, n, k int, x []T, lda int, y []T, ldb int, beta T, c []T, ldc int) {
	if a.stack > 1 && workers(a.seqs*a.kvHeads) > 1 {
		gemmSerial(tA, tB, m, n, k, 1, x, lda, y, ldb, beta, c, ldc)
		return
	}
	gemm(tA, tB, m, n, k, 1, x, lda, y, ldb, beta, c, ldc)
}

// rows returns the (R, Dh) rows of x (N·T, QD) of tile [t0, t1) of
// (sequence s, unit u) with their leading dimension: x itself (QD) for one
// head per tile, else gathered into buf (Dh).
func (a *attention[T]) rows(buf, x []T, s, u, t0, t1 int) ([]T, int) {
	Dh, QD := a.headDim, a.heads*a.headDim
	off := (s*a.tokens+t0)*QD + u*a.stack*Dh
	if a.stack == 1 {
		return x[off:], QD
	}
	w := a.stack * Dh
	for i := 0; i < t1-t0; i++ {
		copy(buf[i*w:(i+1)*w], x[off+i*QD:off+i*QD+w])
	}
	return buf[:(t1-t0)*w], Dh
}

// dest is where a tile's output rows go: into x (N·T, QD) itself (QD) for
// one head per tile, else into buf (Dh) for scatter.
func (a *attention[T]) dest(buf, x []T, s, u, t0 int) ([]T, int) {
	if a.stack > 1 {
		return buf, a.headDim
	}
	QD := a.heads * a.headDim
	return x[(s*a.tokens+t0)*QD+u*a.headDim:], QD
}

// scatter writes a tile's gathered rows buf (R, Dh) back into x (N·T, QD),
// the inverse of rows (nothing for one head per tile).
func (a *attention[T]) scatter(x, buf []T, s, u, t0, t1 int) {
	if a.stack == 1 {
		return
	}
	Dh, QD := a.headDim, a.heads*a.headDim
	off := (s*a.tokens+t0)*QD + u*a.stack*Dh
	w := a.stack * Dh
	for i := 0; i < t1-t0; i++ {
		copy(x[off+i*QD:off+i*QD+w], buf[i*w:(i+1)*w])
	}
}

// probs fills, for sequence s, unit u and query positions [t0, t1) (its
// rows qt with leading dimension ldq), the probabilities of reconstructed
// keys p (R, end = t1) and of original keys po (R, bw) over key band [b0,
// t1). Entries of the other branch and future keys are zero.
func (a *attention[T]) probs(p, po, qt []T, ldq int, kh, ko []T, s, u, t0, t1 int) {
	Dh, KV := a.headDim, a.kvHeads*a.headDim
	g := u * a.stack / (a.heads / a.kvHeads)
	rows, end := (t1-t0)*a.stack, t1
	koff := s*a.tokens*KV + g*Dh
	p = p[:rows*end]
	a.product(false, true, rows, end, Dh, qt, ldq, kh[koff:], KV, 0, p, end)
	b0, bw := a.band(t0, t1)
	if bw > 0 {
		po = po[:rows*bw]
		a.product(false, true, rows, bw, Dh, qt, ldq, ko[koff+b0*KV:], KV, 0, po, bw)
	}
	for r := 0; r < rows; r++ {
		t := t0 + r/a.stack
		row := p[r*end : r*end+end]
		first, lo := a.keys(t)
		rec := row[first:lo]
		var orow, orig []T
		if bw > 0 {
			orow = po[r*bw : r*bw+bw]
			orig = orow[lo-b0 : t+1-b0]
		}
		if c := a.softCap; c > 0 {
			for j, v := range rec {
				rec[j] = softCap(v, c)
			}
			for j, v := range orig {
				orig[j] = softCap(v, c)
			}
		}
		m := T(math.Inf(-1))
		for _, v := range rec {
			if v > m {
				m = v
			}
		}
		for _, v := range orig {
			if v > m {
				m = v
			}
		}
		inv := 1 / (expShift(rec, m) + expShift(orig, m))
		for j := range rec {
			rec[j] *= inv
		}
		for j := range orig {
			orig[j] *= inv
		}
		clear(row[:first])
		clear(row[lo:])
		if bw > 0 {
			clear(orow[:lo-b0])
			clear(orow[t+1-b0:])
		}
	}
}

// forward computes o (N·T, QD) from q (N·T, QD), the reconstructed rotated
// keys kh and values vh (≥ N·T rows, KV), and the original ones ko, vo (used
// only when window > 0).
func (a *attention[T]) forward(o, q, kh, vh, ko, vo []T) {
	Dh, KV, G := a.headDim, a.kvHeads*a.headDim, a.heads/a.kvHeads
	if a.stack == 1 {
		defer freeze(kh, vh, ko, vo)() // read by every query head of a group
	}
	keep := a.prepare()
	perGroup := G / a.stack
	parallel(a.seqs*a.kvHeads, func(w, task int) {
		s, g := task/a.kvHeads, task%a.kvHeads
		p, po, _, _, qb, ob := a.tile(w)
		koff := s*a.tokens*KV + g*Dh
		for u := g * perGroup; u < (g+1)*perGroup; u++ {
			for i, t0 := 0, 0; t0 < a.tokens; i, t0 = i+1, t0+a.block {
				t1 := min(t0+a.block, a.tokens)
				rows := (t1 - t0) * a.stack
				if keep {
					p, po = a.stored(s, u, i, t0, t1)
				}
				qt, ldq := a.rows(qb, q, s, u, t0, t1)
				a.probs(p, po, qt, ldq, kh, ko, s, u, t0, t1)
				ot, ldo := a.dest(ob, o, s, u, t0)
				a.product(false, false, rows, Dh, t1, p, t1, vh[koff:], KV, 0, ot, ldo)
				if b0, bw := a.band(t0, t1); bw > 0 {
					a.product(false, false, rows, Dh, bw, po, bw, vo[koff+b0*KV:], KV, 1, ot, ldo)
				}
				a.scatter(o, ot, s, u, t0, t1)
			}
		}
	})
}

// backward computes the gradients of the loss with respect to the
// reconstructed rotated keys dk and values dv ((N·T, KV), overwritten) from
// the forward inputs, its output o and the output gradient do (N·T, QD).
// With keep, it reuses the probabilities of the last forward, which must
// have run on the same inputs.
func (a *attention[T]) backward(dk, dv, q, kh, vh, ko, vo, o, do []T) {
	Dh, KV, QD, G := a.headDim, a.kvHeads*a.headDim, a.heads*a.headDim, a.heads/a.kvHeads
	n := a.seqs * a.tokens * KV
	clear(dk[:n])
	clear(dv[:n])
	if a.stack == 1 {
		defer freeze(kh, vh, ko, vo)()
	}
	keep := a.prepare()
	perGroup := G / a.stack
	parallel(a.seqs*a.kvHeads, func(w, task int) {
		s, g := task/a.kvHeads, task%a.kvHeads
		p, po, dp, sc, qb, db := a.tile(w)
		koff := s*a.tokens*KV + g*Dh
		for u := g * perGroup; u < (g+1)*perGroup; u++ {
			for i, t0 := 0, 0; t0 < a.tokens; i, t0 = i+1, t0+a.block {
				t1 := min(t0+a.block, a.tokens)
				rows, end := (t1-t0)*a.stack, t1
				qt, ldq := a.rows(qb, q, s, u, t0, t1)
				if keep {
					p, _ = a.stored(s, u, i, t0, t1)
				} else {
					a.probs(p, po, qt, ldq, kh, ko, s, u, t0, t1)
				}
				dt, ldd := a.rows(db, do, s, u, t0, t1)
				dp := dp[:rows*end]
				// dP = dO·V̂ᵀ on the reconstructed branch; dS = P ⊙ (dP − dO·O),
				// times 1 − tanh²(S/c) under the soft-cap (S = Q·K̂ᵀ)
				a.product(false, true, rows, end, Dh, dt, ldd, vh[koff:], KV, 0, dp, end)
				if a.softCap > 0 {
					sc = sc[:rows*end]
					a.product(false, true, rows, end, Dh, qt, ldq, kh[koff:], KV, 0, sc, end)
				}
				for r := 0; r < rows; r++ {
					t, h := t0+r/a.stack, u*a.stack+r%a.stack
					ooff := (s*a.tokens+t)*QD + h*Dh
					orow := o[ooff : ooff+Dh]
					drow := dt[r*ldd : r*ldd+Dh]
					var dot T
					for j, v := range orow {
						dot += v * drow[j]
					}
					first, lo := a.keys(t)
					prow := p[r*end : r*end+lo]
					srow := dp[r*end : r*end+end]
					for j, pv := range prow {
						srow[j] = pv * (srow[j] - dot)
					}
					if c := a.softCap; c > 0 {
						for j, v := range sc[r*end+first : r*end+lo] {
							srow[first+j] *= dSoftCap(v, c)
						}
					}
					clear(srow[lo:])
				}
				// dV̂ += Pᵀ·dO, dK̂r += dSᵀ·Q
				a.product(true, false, end, Dh, rows, p, end, dt, ldd, 1, dv[koff:], KV)
				a.product(true, false, end, Dh, rows, dp, end, qt, ldq, 1, dk[koff:], KV)
			}
		}
	})
}
