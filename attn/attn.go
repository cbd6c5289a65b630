// Package attn is causal grouped-query attention as tiled matrix products,
// shared by the training graph's output term (package graph: forward and
// backward) and the frozen forward of package model (capture, advance,
// eval): blocks of query positions × keys with full-row tiles, GQA, the
// layer's soft-cap and sliding window, and the bi-branch rule of a
// compressed cache (docs/METHOD.md §3). It is generic over float32 (the
// program) and float64 (package graph's gradient checks).
package attn

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
)

// Float is the element type of a kernel: float32, or float64 for gradient
// checks.
type Float interface{ ~float32 | ~float64 }

// Gemm is C = alpha·op(A)·op(B) + beta·C, row-major, through package linalg.
func Gemm[T Float](tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
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

// gemmSerial is Gemm on the calling thread alone (linalg.Gemm32Serial), for
// products issued from several workers at once.
func gemmSerial[T Float](tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
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
func freeze[T Float](xs ...[]T) (thaw func()) {
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

// freeze freezes each sequence's keys or values (T, KV) in xs separately
// (freeze): a bf16 product then rounds a head's keys once for all the
// tiles that read them, its rounding covering the head's rows of that
// sequence alone (linalg rounds a view's rows to the end of its frozen
// slice).
func (a *Kernel[T]) freeze(xs ...[]T) (thaw func()) {
	n := a.tokens * a.kvHeads * a.headDim
	var seqs [][]T
	for _, x := range xs {
		if len(x) < a.seqs*n {
			continue
		}
		for s := 0; s < a.seqs; s++ {
			seqs = append(seqs, x[s*n:(s+1)*n])
		}
	}
	return freeze(seqs...)
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

// softCap is c·tanh(s/c) (model.Attention.Cap); dSoftCap its derivative
// 1 − tanh²(s/c).
func softCap[T Float](s, c T) T { return c * T(math.Tanh(float64(s/c))) }

func dSoftCap[T Float](s, c T) T {
	th := math.Tanh(float64(s / c))
	return T(1 - th*th)
}

// expShift replaces x by exp(x − m) and returns the sum.
func expShift[T Float](x []T, m T) T {
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

// softmax2 replaces the concatenation of a and b by its softmax
// (linalg.Softmax2 in float32).
func softmax2[T Float](a, b []T) {
	if a32, ok := any(a).([]float32); ok {
		linalg.Softmax2(a32, any(b).([]float32))
		return
	}
	softmax2Stats(a, b)
}

// softmax2Stats replaces the concatenation of a and b by its softmax, with
// the sums in 16 partial lanes in float32 (linalg.Softmax2Lanes), and
// returns the shift m and 1/Σ, from which expScale recomputes the row.
func softmax2Stats[T Float](a, b []T) (m, inv T) {
	if a32, ok := any(a).([]float32); ok {
		m32, inv32 := linalg.Softmax2Lanes(a32, any(b).([]float32))
		return T(m32), T(inv32)
	}
	m = T(math.Inf(-1))
	for _, v := range a {
		if v > m {
			m = v
		}
	}
	for _, v := range b {
		if v > m {
			m = v
		}
	}
	inv = 1 / (expShift(a, m) + expShift(b, m))
	for j := range a {
		a[j] *= inv
	}
	for j := range b {
		b[j] *= inv
	}
	return m, inv
}

// expScale sets x[i] = exp(x[i] − m)·inv, a row of softmax2Stats from its
// shift and 1/Σ (linalg.ExpScale in float32).
func expScale[T Float](x []T, m, inv T) {
	if x32, ok := any(x).([]float32); ok {
		linalg.ExpScale(x32, float32(m), float32(inv))
		return
	}
	for i, v := range x {
		x[i] = T(math.Exp(float64(v-m))) * inv
	}
}

// scaleDiff sets s[i] = p[i]·(s[i] − d) (linalg.ScaleDiff in float32).
func scaleDiff[T Float](s, p []T, d T) {
	if s32, ok := any(s).([]float32); ok {
		linalg.ScaleDiff(s32, any(p).([]float32), float32(d))
		return
	}
	for i, pv := range p[:len(s)] {
		s[i] = pv * (s[i] - d)
	}
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

// Kernel is causal grouped-query attention with the layer's rule (soft-cap
// and sliding window, Rule), the bi-branch rule and a fused,
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
type Kernel[T Float] struct {
	seqs, tokens, heads, kvHeads, headDim int
	softCap                               T   // 0 = off
	slide                                 int // the layer's sliding window (0 = every earlier key)
	window                                int
	mode                                  kv.WindowMode
	Block                                 int           // query positions per tile
	Stack                                 int           // query heads per tile (divides heads/kvHeads)
	Keep                                  bool          // store the probabilities of Forward for Backward
	KeyBlock                              int           // keys per block of the recomputing Backward of wide layers (backwardBlocked)
	Wide                                  bool          // products on the worker's core, transposed gradient sums (see stackWidth)
	ws                                    *Workspace[T] // per-worker tiles (Use)
	store                                 []T           // kept probabilities, (N, units, per-unit layout)
	tileOff                               []int         // offset of each tile inside one unit's store
	unitSize                              int           // store elements per (sequence, unit)
	stats                                 []T           // wide layers: each query row's softmax shift and 1/Σ from Forward, (N, units, T·Stack, 2)
	// half: the probabilities and their gradients are written in bf16 for
	// the products that read them (halfProbs); store16 and the workspace's
	// bf16 tiles then replace store and the tiles' p, po, dp as those
	// products' operands.
	half     bool
	keptHalf bool // the last Forward's half, the representation of the probabilities it kept
	noHalf   bool // tests: float32 probabilities even where halfProbs holds
	store16  []uint16
}

// Workspace is the per-worker tiles of attention kernels, kept from call to
// call. Kernels that never run at the same time may share one (Use): a
// layer graph's all-original kernel and its bi-branch ones, the frozen
// forward's kernel from layer to layer. It then holds the largest tiles
// any of them asked for once, instead of a set per kernel; at the 8B shape
// on 4096 tokens that is 12 MiB a worker (16 in bf16).
type Workspace[T Float] struct {
	tiles   [][]T      // per worker: p, po, dp, sc, qb, db (tile)
	tilesT  [][]T      // per worker, Backward of wide layers: dkT, dvT (tileT)
	tiles16 [][]uint16 // per worker, half: p16, po16, dp16 (tile16)
	spans   [][]int32  // per worker, half: a tile's rows' key spans for linalg.SoftmaxExpBF16Rows (spanSize)
}

// Use makes a take its tiles from ws (nil: its own) and returns a.
func (a *Kernel[T]) Use(ws *Workspace[T]) *Kernel[T] {
	if ws != nil {
		a.ws = ws
	}
	return a
}

// grow returns buffer k of bufs with at least n elements, allocating what
// is missing.
func grow[E any](bufs *[][]E, k, n int) []E {
	for len(*bufs) <= k {
		*bufs = append(*bufs, nil)
	}
	if len((*bufs)[k]) < n {
		(*bufs)[k] = make([]E, n)
	}
	return (*bufs)[k]
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

// attnBlock is the query positions per tile: 64 (128 for wide layers), or
// from 1024 tokens on tileRows/stack (256 for one head a tile, 64 for the
// 8B group of 4 heads), where larger products keep the matrix units busy
// (fewer, larger calls); the diagonal tiles compute their future half too.
func attnBlock(tokens int, wide bool, stack int) int {
	switch {
	case tokens >= 1024:
		return max(1, tileRows/stack)
	case wide:
		return min(128, tokens)
	}
	return min(64, tokens)
}

// tileRows is the rows (positions × stacked heads) of a tile from 1024
// tokens on. A tile's scores are rows × keys float32: at
// 1024 rows (the 8B group of 4 × 256 positions) and 2048 keys they are 8 MiB,
// beyond a core's L2, and the score product writing them runs at about 140
// GFLOP/s on one core against 180–500 at 512 rows (bf16, scratch timings).
// Measured at the 8B shape (bf16, one sequence, the median of per-iteration
// ratios of kernels run in turn, 15–24 iterations):
//   - 2048 tokens, forward + backward: 256 rows 0.81–0.84 of 1024 rows'
//     time, 512 rows 0.87–0.89, 128 rows 0.88; 256 rows against 512:
//     forward 0.88, backward 0.93.
//   - 4096 tokens (the backward recomputes, backwardBlocked): 256 rows
//     against 512: forward 0.84, backward 1.07, together 0.97 (an earlier
//     run against 1024 rows: 512 rows 0.92, 256 rows 1.00).
//
// The 7B layer (one head a tile) is fastest at its 256 rows: 128 rows
// 1.06, 64 rows 1.18–1.25.
const tileRows = 256

// keyBlock is the keys per block of backwardBlocked. Measured at the 8B
// shape on 4096 tokens (bf16, whose store does not fit keepBudget): 512
// keys 608 ms per backward, 256 keys 678 ms, 128 keys 835 ms; the
// full-row recomputation before it 735 ms (f32: 1180 ms either way).
const keyBlock = 512

// Rule is what the kernel needs of a layer's attention rule
// (model.Attention): head counts, the soft-cap (0 = off) and the sliding
// window (0 = every earlier key).
type Rule struct {
	Heads, KVHeads, HeadDim int
	SoftCap                 float32
	Window                  int
}

// New is the attention of seqs sequences of tokens under the layer's rule r
// and the bi-branch window and mode (window 0: every key is a replacement
// key).
func New[T Float](seqs, tokens int, r Rule, window int, mode kv.WindowMode) *Kernel[T] {
	wide, stack := r.Heads*r.HeadDim >= stackWidth, 1
	if wide {
		stack = r.Heads / r.KVHeads
	}
	return &Kernel[T]{seqs: seqs, tokens: tokens, heads: r.Heads, kvHeads: r.KVHeads, headDim: r.HeadDim,
		softCap: T(r.SoftCap), slide: r.Window, window: window, mode: mode, Block: attnBlock(tokens, wide, stack), Stack: stack, Wide: wide,
		KeyBlock: keyBlock, ws: &Workspace[T]{}}
}

// Window is the bi-branch window the kernel was made with.
func (a *Kernel[T]) Window() int { return a.window }

// Group is the query heads per KV head, the largest Stack.
func (a *Kernel[T]) Group() int { return a.heads / a.kvHeads }

// keys returns the key ranges of query t: reconstructed [first, lo),
// original [lo, t+1).
func (a *Kernel[T]) keys(t int) (first, lo int) {
	if a.slide > 0 {
		first = max(0, t-a.slide+1)
	}
	lo = max(min(a.mode.OriginalFrom(t, a.window), t+1), first)
	return first, lo
}

// bandCap bounds the original branch's band beyond a tile's own
// positions: the window, at most the tokens (a window of every key, such as
// kvcache's MeasureOnly, is far larger; a band never reaches before key 0).
func (a *Kernel[T]) bandCap() int { return min(max(a.window, 0), a.tokens) }

// band is the key range [b0, t1) of the original branch for the query tile
// [t0, t1); bw = t1 − b0 (0 when the window is off).
func (a *Kernel[T]) band(t0, t1 int) (b0, bw int) {
	if a.window <= 0 {
		return t1, 0
	}
	b0 = a.mode.OriginalFrom(t0, a.window)
	return b0, t1 - b0
}

// tileSizes is the elements of a worker's tiles, R = block·stack rows: p
// (R, T) and po (R, block+W); in a backward dp (R, T) and, with the
// soft-cap, sc (R, T) for the raw scores; when stack > 1, qb and db (R, Dh)
// for a tile's gathered query and output (gradient) rows; in a backward
// with half, dts (R, Dh) for the output gradient rows times their 1/Σ.
func (a *Kernel[T]) tileSizes(backward, half bool) [7]int {
	nb, nt := a.Block*a.Stack, a.tokens
	sz := [7]int{nb * nt, nb * (a.Block + a.bandCap())}
	if backward {
		sz[2] = nb * nt
		if a.softCap > 0 {
			sz[3] = nb * nt
		}
		if half {
			sz[6] = nb * a.headDim
		}
	}
	if a.Stack > 1 {
		sz[4], sz[5] = nb*a.headDim, nb*a.headDim
	}
	return sz
}

// tile16Sizes is the elements of a worker's bf16 tiles (half): p16 (R, T),
// po16 (R, block+W) and in a backward dp16 (R, T), as tile's p, po and dp.
func (a *Kernel[T]) tile16Sizes(backward bool) [3]int {
	sz := a.tileSizes(backward, true)
	return [3]int{sz[0], sz[1], sz[2]}
}

// tileTSize is the elements of a worker's key and value gradients dkT,
// dvT in the backward of a wide layer: transposed (Dh, T each) in float32,
// (T, Dh) with half.
func (a *Kernel[T]) tileTSize() int { return 2 * a.headDim * a.tokens }

// tile returns worker k's tiles (tileSizes for a.half; those a forward
// does not use are empty).
func (a *Kernel[T]) tile(k int, backward bool) (p, po, dp, sc, qb, db, dts []T) {
	sizes := a.tileSizes(backward, a.half)
	need := 0
	for _, n := range sizes {
		need += n
	}
	s := grow(&a.ws.tiles, k, need)
	var parts [7][]T
	for i, n := range sizes {
		parts[i], s = s[:n:n], s[n:]
	}
	return parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], parts[6]
}

// scaleRows sets rows [0, rows) of dst (leading dimension ldd) to those of
// src (lds) times each row's 1/Σ in st (shift and 1/Σ per row), width
// columns: attention's normalisation when its bf16 probabilities are the
// unnormalised exponentials (half).
func scaleRows[T Float](dst, src []T, ldd, lds, rows, width int, st []T) {
	for r := range rows {
		inv := st[2*r+1]
		d, x := dst[r*ldd:r*ldd+width], src[r*lds:r*lds+width]
		for j, v := range x {
			d[j] = v * inv
		}
	}
}

// spanSize is the elements of a worker's key spans (half): 4 a tile row.
func (a *Kernel[T]) spanSize() int { return 4 * a.Block * a.Stack }

// span returns worker k's key spans (spanSize).
func (a *Kernel[T]) span(k int) []int32 { return grow(&a.ws.spans, k, a.spanSize())[:a.spanSize()] }

// tile16 returns worker k's bf16 tiles (tile16Sizes).
func (a *Kernel[T]) tile16(k int, backward bool) (p16, po16, dp16 []uint16) {
	sz := a.tile16Sizes(backward)
	s := grow(&a.ws.tiles16, k, sz[0]+sz[1]+sz[2])
	np, no := sz[0], sz[0]+sz[1]
	return s[:np:np], s[np:no:no], s[no : no+sz[2] : no+sz[2]]
}

// halfProbs reports whether attention writes its probabilities and their
// gradients in bf16 (half): products in bf16 (linalg.BF16), a wide float32
// kernel without a soft-cap. The products would round them anyway; written
// in bf16 by the softmax, they cost the products no rounding pass and half
// the memory traffic. The softmax writes the unnormalised exponentials
// (linalg.SoftmaxExpBF16: one pass after the maximum instead of two) and
// the tile's output rows, or the output gradient rows of dV̂, are scaled by
// 1/Σ instead (scaleRows), R·Dh multiplications for R·T (TestHalfProbs).
func (a *Kernel[T]) halfProbs() bool { return a.halfIn(linalg.CurrentPrecision() == linalg.BF16) }

// halfIn is halfProbs with the products in bf16 or not.
func (a *Kernel[T]) halfIn(bf16 bool) bool {
	var z T
	_, f32 := any(z).(float32)
	return f32 && !a.noHalf && a.Wide && a.softCap == 0 && bf16
}

// tileT returns worker k's key and value gradients dkT, dvT (tileTSize)
// for the backward of a wide layer.
func (a *Kernel[T]) tileT(k int) (dkT, dvT []T) {
	nk := a.tileTSize() / 2
	s := grow(&a.ws.tilesT, k, 2*nk)
	return s[:nk], s[nk : 2*nk]
}

// prepare allocates the per-worker tiles of a forward or backward (before
// the workers run, which only read the workspace's lists) and, when keep
// is set and it fits keepBudget, the probability store. It reports whether
// the store is used.
func (a *Kernel[T]) prepare(backward bool) bool {
	a.half = a.halfProbs()
	for k := workers(a.seqs * a.kvHeads); k > 0; k-- {
		a.tile(k-1, backward)
		if a.half {
			a.tile16(k-1, backward)
			a.span(k - 1)
		}
		if backward && a.Wide {
			a.tileT(k - 1)
		}
	}
	if n := a.seqs * a.heads * a.tokens * 2; a.Wide && len(a.stats) != n {
		a.stats = make([]T, n)
	}
	if !a.Keep {
		return false
	}
	total := a.storeSize()
	if total > keepBudget {
		return false
	}
	if a.half {
		a.store = nil
		if len(a.store16) != total {
			a.store16 = make([]uint16, total)
		}
		return true
	}
	a.store16 = nil
	if len(a.store) != total {
		a.store = make([]T, total)
	}
	return true
}

// storeSize is the probability store's elements: for each unit, the tiles'
// rows × (causal keys + the original branch's band).
func (a *Kernel[T]) storeSize() int {
	if a.tileOff == nil {
		n := 0
		for t0 := 0; t0 < a.tokens; t0 += a.Block {
			t1 := min(t0+a.Block, a.tokens)
			_, bw := a.band(t0, t1)
			a.tileOff = append(a.tileOff, n)
			n += (t1 - t0) * a.Stack * (t1 + bw)
		}
		a.unitSize = n
	}
	return a.seqs * a.heads / a.Stack * a.unitSize
}

// StoreBytes is the memory of the probability store that a float32 kernel
// of seqs sequences of tokens under r, with the bi-branch window and mode,
// keeps from Forward for Backward when Keep: 0 above keepBudget (Backward
// then recomputes the probabilities), 2 bytes an element when they are
// bf16 (halfProbs, with products in bf16), else 4.
func StoreBytes(seqs, tokens int, r Rule, window int, mode kv.WindowMode, bf16 bool) int64 {
	a := New[float32](seqs, tokens, r, window, mode)
	n := a.storeSize()
	switch {
	case n > keepBudget:
		return 0
	case a.halfIn(bf16):
		return 2 * int64(n)
	}
	return 4 * int64(n)
}

// WorkspaceBytes is the memory besides the store that a float32 kernel of
// seqs sequences of tokens under r, with the bi-branch window and mode,
// allocates for Forward (and, with backward, for Backward too), as prepare
// allocates it: tiles, the per-worker tiles of GOMAXPROCS workers at most
// (a Workspace, which kernels may share), and stats, the kernel's own
// softmax statistics of every query row (wide layers). A larger window
// or the backward never needs less of any tile.
func WorkspaceBytes(seqs, tokens int, r Rule, window int, mode kv.WindowMode, bf16, backward bool) (tiles, stats int64) {
	a := New[float32](seqs, tokens, r, window, mode)
	var per int64
	for _, n := range a.tileSizes(backward, a.halfIn(bf16)) {
		per += 4 * int64(n)
	}
	if a.halfIn(bf16) {
		for _, n := range a.tile16Sizes(backward) {
			per += 2 * int64(n)
		}
		per += 4 * int64(a.spanSize())
	}
	if backward && a.Wide {
		per += 4 * int64(a.tileTSize())
	}
	if a.Wide {
		stats = 4 * int64(seqs*a.heads*tokens*2)
	}
	return int64(workers(seqs*a.kvHeads)) * per, stats
}

// stored returns the kept probabilities of tile i of (sequence s, unit u).
func (a *Kernel[T]) stored(s, u, i, t0, t1 int) (p, po []T) {
	_, bw := a.band(t0, t1)
	off := (s*a.heads/a.Stack+u)*a.unitSize + a.tileOff[i]
	r := (t1 - t0) * a.Stack
	return a.store[off : off+r*t1], a.store[off+r*t1 : off+r*(t1+bw)]
}

// stored16 is stored for the bf16 store (half).
func (a *Kernel[T]) stored16(s, u, i, t0, t1 int) (p, po []uint16) {
	_, bw := a.band(t0, t1)
	off := (s*a.heads/a.Stack+u)*a.unitSize + a.tileOff[i]
	r := (t1 - t0) * a.Stack
	return a.store16[off : off+r*t1], a.store16[off+r*t1 : off+r*(t1+bw)]
}

// product16 is product with an operand in bf16 (half; linalg.GemmBF16).
func (a *Kernel[T]) product16(m, n, k int, x, y linalg.Operand, beta T, c []T, ldc int) {
	serial := a.Wide && workers(a.seqs*a.kvHeads) > 1
	linalg.GemmBF16(serial, m, n, k, 1, x, y, float32(beta), any(c).([]float32), ldc)
}

// op32 is x (float32 when half) as a product operand.
func op32[T Float](x []T, ld int, t bool) linalg.Operand {
	return linalg.Operand{F32: any(x).([]float32), LD: ld, T: t}
}

// op16 is bf16 x as a product operand.
func op16(x []uint16, ld int) linalg.Operand { return linalg.Operand{BF16: x, LD: ld} }

// op16T is bf16 x read transposed.
func op16T(x []uint16, ld int) linalg.Operand { return linalg.Operand{BF16: x, LD: ld, T: true} }

// product is a tile's matrix product: on the worker's core for wide layers
// when several workers run (gemmSerial), else Gemm.
func (a *Kernel[T]) product(tA, tB bool, m, n, k int, x []T, lda int, y []T, ldb int, beta T, c []T, ldc int) {
	if a.Wide && workers(a.seqs*a.kvHeads) > 1 {
		gemmSerial(tA, tB, m, n, k, 1, x, lda, y, ldb, beta, c, ldc)
		return
	}
	Gemm(tA, tB, m, n, k, 1, x, lda, y, ldb, beta, c, ldc)
}

// rows returns the (R, Dh) rows of x (N·T, QD) of tile [t0, t1) of
// (sequence s, unit u) with their leading dimension: x itself (QD) for one
// head per tile, else gathered into buf (Dh).
func (a *Kernel[T]) rows(buf, x []T, s, u, t0, t1 int) ([]T, int) {
	Dh, QD := a.headDim, a.heads*a.headDim
	off := (s*a.tokens+t0)*QD + u*a.Stack*Dh
	if a.Stack == 1 {
		return x[off:], QD
	}
	w := a.Stack * Dh
	for i := 0; i < t1-t0; i++ {
		copy(buf[i*w:(i+1)*w], x[off+i*QD:off+i*QD+w])
	}
	return buf[:(t1-t0)*w], Dh
}

// dest is where a tile's output rows go: into x (N·T, QD) itself (QD) for
// one head per tile, else into buf (Dh) for scatter.
func (a *Kernel[T]) dest(buf, x []T, s, u, t0 int) ([]T, int) {
	if a.Stack > 1 {
		return buf, a.headDim
	}
	QD := a.heads * a.headDim
	return x[(s*a.tokens+t0)*QD+u*a.headDim:], QD
}

// scatter writes a tile's gathered rows buf (R, Dh) back into x (N·T, QD),
// the inverse of rows (nothing for one head per tile).
func (a *Kernel[T]) scatter(x, buf []T, s, u, t0, t1 int) {
	if a.Stack == 1 {
		return
	}
	Dh, QD := a.headDim, a.heads*a.headDim
	off := (s*a.tokens+t0)*QD + u*a.Stack*Dh
	w := a.Stack * Dh
	for i := 0; i < t1-t0; i++ {
		copy(x[off+i*QD:off+i*QD+w], buf[i*w:(i+1)*w])
	}
}

// probs fills, for sequence s, unit u and query positions [t0, t1) (its
// rows qt with leading dimension ldq), the probabilities of reconstructed
// keys p (R, end = t1) and of original keys po (R, bw) over key band [b0,
// t1). Entries of the other branch and future keys are zero.
//
// Wide layers record each row's softmax shift and 1/Σ in st (2 per row)
// when st is not nil. When half (st then set), p16 and po16 get the
// unnormalised exponentials exp(S − shift) in bf16 instead (p and po then
// hold the scores): the probabilities are them times the row's 1/Σ, which
// the products' callers apply (scaleRows); span (spanSize) is the worker's
// scratch for the rows' key spans.
func (a *Kernel[T]) probs(p, po, qt []T, ldq int, kh, ko []T, s, u, t0, t1 int, st []T, p16, po16 []uint16, span []int32) {
	Dh, KV := a.headDim, a.kvHeads*a.headDim
	g := u * a.Stack / (a.heads / a.kvHeads)
	rows, end := (t1-t0)*a.Stack, t1
	koff := s*a.tokens*KV + g*Dh
	p = p[:rows*end]
	a.product(false, true, rows, end, Dh, qt, ldq, kh[koff:], KV, 0, p, end)
	b0, bw := a.band(t0, t1)
	if bw > 0 {
		po = po[:rows*bw]
		a.product(false, true, rows, bw, Dh, qt, ldq, ko[koff+b0*KV:], KV, 0, po, bw)
	}
	if a.half { // one call for the tile's rows (no soft-cap here: halfIn)
		span = span[:4*rows]
		for r := range rows {
			t := t0 + r/a.Stack
			first, lo := a.keys(t)
			span[4*r], span[4*r+1], span[4*r+2], span[4*r+3] = int32(first), int32(lo), 0, 0
			if bw > 0 {
				span[4*r+2], span[4*r+3] = int32(lo-b0), int32(t+1-b0)
			}
		}
		linalg.SoftmaxExpBF16Rows(any(p).([]float32), end, any(po).([]float32), bw, p16, po16, span, any(st).([]float32))
		return
	}
	for r := 0; r < rows; r++ {
		t := t0 + r/a.Stack
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
		if a.Wide { // long rows: the one-pass sum (see linalg.Softmax2Lanes)
			m, inv := softmax2Stats(rec, orig)
			if st != nil {
				st[2*r], st[2*r+1] = m, inv
			}
		} else {
			softmax2(rec, orig)
		}
		clear(row[:first])
		clear(row[lo:])
		if bw > 0 {
			clear(orow[:lo-b0])
			clear(orow[t+1-b0:])
		}
	}
}

// rowStats returns the softmax shift and 1/Σ of the rows of tile [t0, t1)
// of (sequence s, unit u), 2 per row (nil for narrow layers).
func (a *Kernel[T]) rowStats(s, u, t0, t1 int) []T {
	if !a.Wide {
		return nil
	}
	units := a.heads / a.Stack
	off := ((s*units+u)*a.tokens + t0) * a.Stack * 2
	return a.stats[off : off+(t1-t0)*a.Stack*2]
}

// backwardBlocked is the backward of one tile of a wide layer without a
// soft-cap whose probabilities Forward did not keep: block by block of
// KeyBlock reconstructed keys it recomputes the scores S = Q·K̂ᵀ, the
// probabilities P = exp(S − m)·inv from the shift and 1/Σ of each row that
// Forward recorded, dP = dO·V̂ᵀ and dS = P ⊙ (dP − dO·O), and accumulates
// dV̂ᵀ += dOᵀ·P and dK̂rᵀ += Qᵀ·dS, so that its buffers are rows × KeyBlock
// (p, dp) whatever T. dots (≥ rows) is scratch for the rows' dO·O. When
// half, the exponentials E and dS go to p16 and dp16 in bf16 for the
// gradient products, and dts (rows, Dh) gets dO times each row's 1/Σ for
// dV̂ += Eᵀ·(dO·1/Σ) (dkT, dvT are then (T, Dh), tileTSize).
func (a *Kernel[T]) backwardBlocked(p, dp, dots, qt []T, ldq int, dt []T, ldd int, dts, kh, vh, o, dkT, dvT []T, s, u, t0, t1, koff int, p16, dp16 []uint16) {
	Dh, KV, QD := a.headDim, a.kvHeads*a.headDim, a.heads*a.headDim
	rows, kb := (t1-t0)*a.Stack, max(a.KeyBlock, 1)
	st := a.rowStats(s, u, t0, t1)
	if a.half {
		scaleRows(dts, dt, Dh, ldd, rows, Dh, st)
	}
	kLo, kHi := a.tokens, 0 // the reconstructed keys of the tile's rows
	for r := 0; r < rows; r++ {
		t, h := t0+r/a.Stack, u*a.Stack+r%a.Stack
		ooff := (s*a.tokens+t)*QD + h*Dh
		orow, drow := o[ooff:ooff+Dh], dt[r*ldd:r*ldd+Dh]
		var dot T
		for j, v := range orow {
			dot += v * drow[j]
		}
		dots[r] = dot
		if first, lo := a.keys(t); lo > first {
			kLo, kHi = min(kLo, first), max(kHi, lo)
		}
	}
	for c0 := kLo; c0 < kHi; c0 += kb {
		c1 := min(c0+kb, kHi)
		w := c1 - c0
		sp, sd := p[:rows*w], dp[:rows*w]
		a.product(false, true, rows, w, Dh, qt, ldq, kh[koff+c0*KV:], KV, 0, sp, w)
		a.product(false, true, rows, w, Dh, dt, ldd, vh[koff+c0*KV:], KV, 0, sd, w)
		for r := 0; r < rows; r++ {
			first, lo := a.keys(t0 + r/a.Stack)
			j0 := min(max(first-c0, 0), w)
			j1 := max(min(lo-c0, w), j0)
			prow, drow := sp[r*w:(r+1)*w], sd[r*w:(r+1)*w]
			if a.half { // E = exp(S − shift); dS = E·1/Σ ⊙ (dP − dO·O)
				prow16, drow16 := p16[r*w:(r+1)*w], dp16[r*w:(r+1)*w]
				linalg.ExpBF16(any(prow[j0:j1]).([]float32), prow16[j0:j1], float32(st[2*r]))
				linalg.ScaleDiffBF16(drow16[j0:j1], any(drow[j0:j1]).([]float32), prow16[j0:j1], float32(dots[r]), float32(st[2*r+1]))
				clear(prow16[:j0])
				clear(prow16[j1:])
				clear(drow16[:j0])
				clear(drow16[j1:])
				continue
			}
			expScale(prow[j0:j1], st[2*r], st[2*r+1])
			scaleDiff(drow[j0:j1], prow[j0:j1], dots[r])
			clear(prow[:j0])
			clear(prow[j1:])
			clear(drow[:j0])
			clear(drow[j1:])
		}
		if a.half { // dV̂ += Eᵀ·(dO·1/Σ), dK̂r += dSᵀ·Q (see Backward)
			a.product16(w, Dh, rows, op16T(p16[:rows*w], w), op32(dts, Dh, false), 1, dvT[c0*Dh:], Dh)
			a.product16(w, Dh, rows, op16T(dp16[:rows*w], w), op32(qt, ldq, false), 1, dkT[c0*Dh:], Dh)
			continue
		}
		a.product(true, false, Dh, w, rows, dt, ldd, sp, w, 1, dvT[c0:], a.tokens)
		a.product(true, false, Dh, w, rows, qt, ldq, sd, w, 1, dkT[c0:], a.tokens)
	}
}

// Forward computes o (N·T, QD) from q (N·T, QD), the reconstructed rotated
// keys kh and values vh (≥ N·T rows, KV), and the original ones ko, vo (used
// only when window > 0).
func (a *Kernel[T]) Forward(o, q, kh, vh, ko, vo []T) {
	Dh, KV, G := a.headDim, a.kvHeads*a.headDim, a.heads/a.kvHeads
	defer a.freeze(kh, vh, ko, vo)() // read by every tile of a head
	keep := a.prepare(false)
	a.keptHalf = a.half
	perGroup := G / a.Stack
	parallel(a.seqs*a.kvHeads, func(w, task int) {
		s, g := task/a.kvHeads, task%a.kvHeads
		p, po, _, _, qb, ob, _ := a.tile(w, false)
		var p16, po16 []uint16
		var span []int32
		if a.half {
			p16, po16, _ = a.tile16(w, false)
			span = a.span(w)
		}
		koff := s*a.tokens*KV + g*Dh
		for u := g * perGroup; u < (g+1)*perGroup; u++ {
			for i, t0 := 0, 0; t0 < a.tokens; i, t0 = i+1, t0+a.Block {
				t1 := min(t0+a.Block, a.tokens)
				rows := (t1 - t0) * a.Stack
				switch {
				case keep && a.half:
					p16, po16 = a.stored16(s, u, i, t0, t1)
				case keep:
					p, po = a.stored(s, u, i, t0, t1)
				}
				qt, ldq := a.rows(qb, q, s, u, t0, t1)
				st := a.rowStats(s, u, t0, t1)
				a.probs(p, po, qt, ldq, kh, ko, s, u, t0, t1, st, p16, po16, span)
				ot, ldo := a.dest(ob, o, s, u, t0)
				b0, bw := a.band(t0, t1)
				if a.half { // O = (E·V̂ + Eo·Vo)·1/Σ for the exponentials E, Eo
					a.product16(rows, Dh, t1, op16(p16[:rows*t1], t1), op32(vh[koff:], KV, false), 0, ot, ldo)
					if bw > 0 {
						a.product16(rows, Dh, bw, op16(po16[:rows*bw], bw), op32(vo[koff+b0*KV:], KV, false), 1, ot, ldo)
					}
					scaleRows(ot, ot, ldo, ldo, rows, Dh, st)
				} else {
					a.product(false, false, rows, Dh, t1, p, t1, vh[koff:], KV, 0, ot, ldo)
					if bw > 0 {
						a.product(false, false, rows, Dh, bw, po, bw, vo[koff+b0*KV:], KV, 1, ot, ldo)
					}
				}
				a.scatter(o, ot, s, u, t0, t1)
			}
		}
	})
}

// Backward computes the gradients of the loss with respect to the
// reconstructed rotated keys dk and values dv ((N·T, KV), overwritten) from
// the forward inputs, its output o and the output gradient do (N·T, QD).
// With keep, it reuses the probabilities of the last forward, which must
// have run on the same inputs.
func (a *Kernel[T]) Backward(dk, dv, q, kh, vh, ko, vo, o, do []T) {
	Dh, KV, QD, G := a.headDim, a.kvHeads*a.headDim, a.heads*a.headDim, a.heads/a.kvHeads
	n := a.seqs * a.tokens * KV
	clear(dk[:n])
	clear(dv[:n])
	defer a.freeze(kh, vh, ko, vo)()
	// Probabilities kept in the other representation (the precision changed
	// since Forward) are recomputed.
	keep := a.prepare(true) && a.half == a.keptHalf
	// Wide layers without a soft-cap recompute unkept probabilities block
	// by block of keys.
	blocked := a.Wide && !keep && a.softCap == 0
	perGroup := G / a.Stack
	parallel(a.seqs*a.kvHeads, func(w, task int) {
		s, g := task/a.kvHeads, task%a.kvHeads
		p, po, dp, sc, qb, db, dts := a.tile(w, true)
		var p16, po16, dp16 []uint16
		var span []int32
		if a.half {
			p16, po16, dp16 = a.tile16(w, true)
			span = a.span(w)
		}
		var dkT, dvT []T
		if a.Wide {
			dkT, dvT = a.tileT(w)
			clear(dkT)
			clear(dvT)
		}
		koff := s*a.tokens*KV + g*Dh
		for u := g * perGroup; u < (g+1)*perGroup; u++ {
			for i, t0 := 0, 0; t0 < a.tokens; i, t0 = i+1, t0+a.Block {
				t1 := min(t0+a.Block, a.tokens)
				rows, end := (t1-t0)*a.Stack, t1
				qt, ldq := a.rows(qb, q, s, u, t0, t1)
				dt, ldd := a.rows(db, do, s, u, t0, t1)
				if blocked {
					a.backwardBlocked(p, dp, po, qt, ldq, dt, ldd, dts, kh, vh, o, dkT, dvT, s, u, t0, t1, koff, p16, dp16)
					continue
				}
				switch {
				case keep && a.half:
					p16, _ = a.stored16(s, u, i, t0, t1)
				case keep:
					p, _ = a.stored(s, u, i, t0, t1)
				default:
					a.probs(p, po, qt, ldq, kh, ko, s, u, t0, t1, nil, p16, po16, span)
				}
				dp := dp[:rows*end]
				st := a.rowStats(s, u, t0, t1)
				// dP = dO·V̂ᵀ on the reconstructed branch; dS = P ⊙ (dP − dO·O),
				// times 1 − tanh²(S/c) under the soft-cap (S = Q·K̂ᵀ)
				a.product(false, true, rows, end, Dh, dt, ldd, vh[koff:], KV, 0, dp, end)
				if a.softCap > 0 {
					sc = sc[:rows*end]
					a.product(false, true, rows, end, Dh, qt, ldq, kh[koff:], KV, 0, sc, end)
				}
				for r := 0; r < rows; r++ {
					t, h := t0+r/a.Stack, u*a.Stack+r%a.Stack
					ooff := (s*a.tokens+t)*QD + h*Dh
					orow := o[ooff : ooff+Dh]
					drow := dt[r*ldd : r*ldd+Dh]
					var dot T
					for j, v := range orow {
						dot += v * drow[j]
					}
					first, lo := a.keys(t)
					srow := dp[r*end : r*end+end]
					if a.half { // P = E·1/Σ
						drow16 := dp16[r*end : r*end+end]
						linalg.ScaleDiffBF16(drow16[:lo], any(srow).([]float32), p16[r*end:r*end+lo], float32(dot), float32(st[2*r+1]))
						clear(drow16[lo:])
						continue
					}
					scaleDiff(srow[:lo], p[r*end:r*end+lo], dot)
					if c := a.softCap; c > 0 {
						for j, v := range sc[r*end+first : r*end+lo] {
							srow[first+j] *= dSoftCap(v, c)
						}
					}
					clear(srow[lo:])
				}
				// dV̂ += Pᵀ·dO, dK̂r += dSᵀ·Q; wide layers in float32
				// accumulate the transposes dV̂ᵀ += dOᵀ·P, dK̂rᵀ += Qᵀ·dS, whose
				// large operand (P, dS) enters the product untransposed. With
				// half, the bf16 E and dS are read transposed as they lie, and
				// the worker's dV̂, dK̂r (T, Dh) take each tile's keys [0, end)
				// as a dense prefix: oneDNN's bf16 kernels write it in place,
				// where a strided C costs them a dense copy and an addition.
				switch {
				case a.half: // dV̂ += Eᵀ·(dO·1/Σ)
					scaleRows(dts, dt, Dh, ldd, rows, Dh, st)
					a.product16(end, Dh, rows, op16T(p16[:rows*end], end), op32(dts, Dh, false), 1, dvT, Dh)
					a.product16(end, Dh, rows, op16T(dp16[:rows*end], end), op32(qt, ldq, false), 1, dkT, Dh)
				case a.Wide:
					a.product(true, false, Dh, end, rows, dt, ldd, p, end, 1, dvT, a.tokens)
					a.product(true, false, Dh, end, rows, qt, ldq, dp, end, 1, dkT, a.tokens)
				default:
					a.product(true, false, end, Dh, rows, p, end, dt, ldd, 1, dv[koff:], KV)
					a.product(true, false, end, Dh, rows, dp, end, qt, ldq, 1, dk[koff:], KV)
				}
			}
		}
		switch {
		case a.half:
			copyRows(dk[koff:], KV, dkT, a.tokens, Dh)
			copyRows(dv[koff:], KV, dvT, a.tokens, Dh)
		case a.Wide:
			transposeInto(dk[koff:], KV, dkT, a.tokens, Dh)
			transposeInto(dv[koff:], KV, dvT, a.tokens, Dh)
		}
	})
}

// transposeInto writes src (cols, rows) transposed into the first cols
// columns of dst (rows, ld). It goes in blocks of transposeBlock rows of
// dst: a column of src read whole row by row (stride rows) would miss the
// L1 cache at every element (rows of 2048 floats are 8 KiB apart: one
// cache set), and a block's dst lines fit one set's ways.
func transposeInto[T Float](dst []T, ld int, src []T, rows, cols int) {
	for j0 := 0; j0 < rows; j0 += transposeBlock {
		j1 := min(j0+transposeBlock, rows)
		for d := 0; d < cols; d++ {
			for j, v := range src[d*rows+j0 : d*rows+j1] {
				dst[(j0+j)*ld+d] = v
			}
		}
	}
}

// copyRows writes src (rows, cols) into the first cols columns of dst
// (rows, ld).
func copyRows[T Float](dst []T, ld int, src []T, rows, cols int) {
	for j := range rows {
		copy(dst[j*ld:j*ld+cols], src[j*cols:(j+1)*cols])
	}
}

// transposeBlock is transposeInto's rows per block.
const transposeBlock = 8
