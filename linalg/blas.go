package linalg

import (
	"time"

	"gonum.org/v1/gonum/blas"
)

// Impl is the BLAS implementation in use: it satisfies both blas.Float32 and
// blas.Float64, which is what gorgonia.Use expects.
type Impl interface {
	blas.Float32
	blas.Float64
}

// BLAS returns the implementation chosen at build time.
func BLAS() Impl { return impl }

// Backend names the implementation in use, for `cskv inspect` and benchmarks.
func Backend() string { return backend }

// MatMulT computes C = A·Bᵀ (+ C if accumulate) for row-major float32 matrices:
// A (m, k), B (n, k), C (m, n). This is y = x·Wᵀ for weights stored [out, in].
func MatMulT(c []float32, a []float32, b []float32, m, n, k int, accumulate bool) {
	if m == 0 || n == 0 {
		return
	}
	if exact.Load() {
		matMulTExact(c, a, b, m, n, k, accumulate)
		return
	}
	beta := float32(0)
	if accumulate {
		beta = 1
	}
	Gemm32(false, true, m, n, k, 1, a, k, b, k, beta, c, n)
}

// MatMul computes C = A·B (+ C if accumulate): A (m, k), B (k, n), C (m, n).
func MatMul(c []float32, a []float32, b []float32, m, n, k int, accumulate bool) {
	if m == 0 || n == 0 {
		return
	}
	beta := float32(0)
	if accumulate {
		beta = 1
	}
	Gemm32(false, false, m, n, k, 1, a, k, b, n, beta, c, n)
}

// Gemm32 is the general float32 product C = alpha·op(A)·op(B) + beta·C with
// leading dimensions equal to the row lengths of the stored matrices, in
// the Precision in use (see route).
func Gemm32(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if counting.Load() {
		defer countProduct(false, m, n, k, time.Now())
	}
	if bf16, ok := route(m, n, k); ok && dnnlGemm(bf16, false, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
		return
	}
	impl.Sgemm(trans(tA), trans(tB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Gemm32Serial is Gemm32 computed on the calling thread alone, for callers
// that already run one product per core (the tiles of attention): a thread
// team per call would oversubscribe the cores. With oneDNN every float32
// product of it runs there (BLAS's thread count is global).
func Gemm32Serial(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if counting.Load() {
		defer countProduct(true, m, n, k, time.Now())
	}
	bf16 := CurrentPrecision() == BF16 && m >= minBF16Rows
	if hasDNNL && k > 0 && dnnlGemm(bf16, true, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
		return
	}
	impl.Sgemm(trans(tA), trans(tB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// minBF16Rows is the fewest rows of C a bf16 product needs: below it (a
// decoding step's matrix-vector products) rounding the whole B to bf16 costs
// more than the product, which then runs in float32.
const minBF16Rows = 8

// serialMACs is the product size (m·n·k) below which oneDNN runs on the
// calling thread alone: such products (the attention tiles) come from
// callers that already run one per core, and a thread team per call would
// oversubscribe the cores. The rule depends only on the shape, so results
// do not depend on what else runs.
const serialMACs = 1 << 25

// A float32 product runs on oneDNN when C has at least minDNNLRows rows,
// op(B) at least minDNNLOperand elements and the product at least
// serialMACs multiply-adds: every large product of a wide layer's training
// step then runs on one thread team (oneDNN's). With the rank-sized ones
// (dA = dCᵀ·X, K̂ = C·Bᵀ, dC = dK̂·B at rank 512) on BLAS, the two
// libraries' idle threads spun against each other and the KV step ran at
// 65–72% of the peak against 80–81% (`cskv bench --loss kv`, Llama-3-8B
// shape). The models of width ≤ 256 (stories260K, the family fixtures) keep
// BLAS, with the bits their reference numbers were measured with.
const (
	minDNNLRows    = 256
	minDNNLOperand = 1 << 18
)

// route says whether oneDNN computes an (m, n, k) product, and in bf16.
// bf16 products (Precision BF16, m ≥ minBF16Rows) always do; float32 ones
// do when dnnlF32 is set and the product is a wide layer's (minDNNLRows).
func route(m, n, k int) (bf16, ok bool) {
	if !hasDNNL || k == 0 {
		return false, false
	}
	if CurrentPrecision() == BF16 && m >= minBF16Rows {
		return true, true
	}
	return false, dnnlF32 && m >= minDNNLRows && n*k >= minDNNLOperand && m*n*k >= serialMACs
}

// Gemm64 is the float64 counterpart of Gemm32.
func Gemm64(tA, tB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	impl.Dgemm(trans(tA), trans(tB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func trans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// smallWidth is the model width below which BLAS runs single-threaded: its
// products are too small for threads, which then spin more than they compute
// (measured on stories260K: 13–21 vs 2.3–3 CPU-ms per training step).
const smallWidth = 1024

// ThreadsFor sets the BLAS thread count suited to a model of the given
// width and returns a function that restores the previous setting.
func ThreadsFor(width int) (restore func()) {
	prev := Threads()
	if width >= smallWidth || prev <= 1 {
		return func() {}
	}
	SetThreads(1)
	return func() { SetThreads(prev) }
}
