package graph

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
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

// ropeTable holds cos and sin of θ_i = pos·base^(−2i/Dh) for the rotate-half
// (Hugging Face) convention.
type ropeTable[T float] struct {
	tokens, half int
	cos, sin     []T // (T, Dh/2)
}

func newRope[T float](tokens, headDim int, base float64) *ropeTable[T] {
	half := headDim / 2
	r := &ropeTable[T]{tokens: tokens, half: half, cos: make([]T, tokens*half), sin: make([]T, tokens*half)}
	for i := 0; i < half; i++ {
		inv := math.Pow(base, -2*float64(i)/float64(headDim))
		for p := 0; p < tokens; p++ {
			s, c := math.Sincos(float64(p) * inv)
			r.cos[p*half+i] = T(c)
			r.sin[p*half+i] = T(s)
		}
	}
	return r
}

// apply rotates every head of rows [0, rows) of src (rows, width) into dst
// (dst may be src): out[i] = x[i]·cos − x[i+h]·sin, out[i+h] = x[i+h]·cos +
// x[i]·sin, position = row mod T. inverse applies the transpose rotation
// (the backward of apply).
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

// attention is causal grouped-query attention with the bi-branch rule and a
// fused, numerically safe softmax. Q is already rotated and scaled by
// 1/√Dh. For query t the original keys and values are those j in
// [lo, t] with lo = mode.OriginalFrom(t, window); keys j < lo are the
// reconstructed ones (already rotated).
//
// Work is split into tiles of block query rows of one head; tasks are
// (sequence, KV head) pairs, so that concurrent tasks write disjoint parts of
// the key and value gradients.
type attention[T float] struct {
	seqs, tokens, heads, kvHeads, headDim int
	window                                int
	mode                                  kv.WindowMode
	block                                 int   // query rows per tile
	keep                                  bool  // store the probabilities of forward for backward
	scratch                               [][]T // per worker
	store                                 []T   // kept probabilities, (N, H, per-head layout)
	tileOff                               []int // offset of each tile inside one head's store
	headSize                              int   // store elements per (sequence, head)
}

// keepBudget is the largest probability store (elements) that forward keeps
// for backward; above it backward recomputes the probabilities.
const keepBudget = 1 << 27 // 512 MiB of float32: the 8B and 7B shapes at 2048 tokens keep theirs

// attnBlock is the query rows per tile: 64, or 256 from 1024 tokens on,
// where larger products keep the matrix units busy (fewer, larger calls).
func attnBlock(tokens int) int {
	if tokens >= 1024 {
		return 256
	}
	return min(64, tokens)
}

func newAttention[T float](seqs, tokens, heads, kvHeads, headDim, window int, mode kv.WindowMode) *attention[T] {
	return &attention[T]{seqs: seqs, tokens: tokens, heads: heads, kvHeads: kvHeads, headDim: headDim,
		window: window, mode: mode, block: attnBlock(tokens)}
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

// tile returns worker k's buffers: p (block, T), po (block, block+W), dp (block, T).
func (a *attention[T]) tile(k int) (p, po, dp []T) {
	nb, nt := a.block, a.tokens
	bw := nb + max(a.window, 0)
	need := nb*nt*2 + nb*bw
	for len(a.scratch) <= k {
		a.scratch = append(a.scratch, nil)
	}
	if len(a.scratch[k]) < need {
		a.scratch[k] = make([]T, need)
	}
	s := a.scratch[k]
	return s[:nb*nt], s[nb*nt : nb*nt+nb*bw], s[nb*nt+nb*bw : need]
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
			n += (t1 - t0) * (t1 + bw)
		}
		a.headSize = n
	}
	total := a.seqs * a.heads * a.headSize
	if total > keepBudget {
		return false
	}
	if len(a.store) != total {
		a.store = make([]T, total)
	}
	return true
}

// stored returns the kept probabilities of tile i of (sequence s, head h).
func (a *attention[T]) stored(s, h, i, t0, t1 int) (p, po []T) {
	_, bw := a.band(t0, t1)
	off := (s*a.heads+h)*a.headSize + a.tileOff[i]
	n := (t1 - t0) * t1
	return a.store[off : off+n], a.store[off+n : off+n+(t1-t0)*bw]
}

// probs fills, for sequence s, query head h and query rows [t0, t1), the
// probabilities of reconstructed keys p (t1−t0, end = t1) and of original
// keys po (t1−t0, bw) over key band [b0, t1). Entries of the other branch
// and future keys are zero.
func (a *attention[T]) probs(p, po, q, kh, ko []T, s, h, t0, t1 int) {
	Dh, KV, QD := a.headDim, a.kvHeads*a.headDim, a.heads*a.headDim
	g := h / (a.heads / a.kvHeads)
	nb, end := t1-t0, t1
	qoff := (s*a.tokens+t0)*QD + h*Dh
	koff := s*a.tokens*KV + g*Dh
	p = p[:nb*end]
	gemm(false, true, nb, end, Dh, 1, q[qoff:], QD, kh[koff:], KV, 0, p, end)
	b0, bw := a.band(t0, t1)
	if bw > 0 {
		po = po[:nb*bw]
		gemm(false, true, nb, bw, Dh, 1, q[qoff:], QD, ko[koff+b0*KV:], KV, 0, po, bw)
	}
	for i := 0; i < nb; i++ {
		t := t0 + i
		row := p[i*end : i*end+end]
		lo := min(a.mode.OriginalFrom(t, a.window), t+1)
		rec := row[:lo]
		var orow, orig []T
		if bw > 0 {
			orow = po[i*bw : i*bw+bw]
			orig = orow[lo-b0 : t+1-b0]
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
	Dh, KV, QD, G := a.headDim, a.kvHeads*a.headDim, a.heads*a.headDim, a.heads/a.kvHeads
	defer freeze(kh, vh, ko, vo)() // read by every query head of a group
	keep := a.prepare()
	parallel(a.seqs*a.kvHeads, func(w, task int) {
		s, g := task/a.kvHeads, task%a.kvHeads
		p, po, _ := a.tile(w)
		koff := s*a.tokens*KV + g*Dh
		for h := g * G; h < (g+1)*G; h++ {
			for i, t0 := 0, 0; t0 < a.tokens; i, t0 = i+1, t0+a.block {
				t1 := min(t0+a.block, a.tokens)
				nb := t1 - t0
				if keep {
					p, po = a.stored(s, h, i, t0, t1)
				}
				a.probs(p, po, q, kh, ko, s, h, t0, t1)
				ooff := (s*a.tokens+t0)*QD + h*Dh
				gemm(false, false, nb, Dh, t1, 1, p, t1, vh[koff:], KV, 0, o[ooff:], QD)
				if b0, bw := a.band(t0, t1); bw > 0 {
					gemm(false, false, nb, Dh, bw, 1, po, bw, vo[koff+b0*KV:], KV, 1, o[ooff:], QD)
				}
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
	defer freeze(kh, vh, ko, vo)()
	keep := a.prepare()
	parallel(a.seqs*a.kvHeads, func(w, task int) {
		s, g := task/a.kvHeads, task%a.kvHeads
		p, po, dp := a.tile(w)
		koff := s*a.tokens*KV + g*Dh
		for h := g * G; h < (g+1)*G; h++ {
			for i, t0 := 0, 0; t0 < a.tokens; i, t0 = i+1, t0+a.block {
				t1 := min(t0+a.block, a.tokens)
				nb, end := t1-t0, t1
				if keep {
					p, _ = a.stored(s, h, i, t0, t1)
				} else {
					a.probs(p, po, q, kh, ko, s, h, t0, t1)
				}
				ooff := (s*a.tokens+t0)*QD + h*Dh
				dp := dp[:nb*end]
				// dP = dO·V̂ᵀ on the reconstructed branch; dS = P ⊙ (dP − dO·O)
				gemm(false, true, nb, end, Dh, 1, do[ooff:], QD, vh[koff:], KV, 0, dp, end)
				for i := 0; i < nb; i++ {
					orow := o[ooff+i*QD : ooff+i*QD+Dh]
					drow := do[ooff+i*QD : ooff+i*QD+Dh]
					var dot T
					for j, v := range orow {
						dot += v * drow[j]
					}
					t := t0 + i
					lo := min(a.mode.OriginalFrom(t, a.window), t+1)
					prow := p[i*end : i*end+lo]
					srow := dp[i*end : i*end+end]
					for j, pv := range prow {
						srow[j] = pv * (srow[j] - dot)
					}
					clear(srow[lo:])
				}
				// dV̂ += Pᵀ·dO, dK̂r += dSᵀ·Q
				gemm(true, false, end, Dh, nb, 1, p, end, do[ooff:], QD, 1, dv[koff:], KV)
				gemm(true, false, end, Dh, nb, 1, dp, end, q[ooff:], QD, 1, dk[koff:], KV)
			}
		}
	})
}
