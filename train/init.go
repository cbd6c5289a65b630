// The initialisations of the CSKV factors (docs/METHOD.md §2).

package train

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"

	"github.com/cskv/cskv/linalg"
)

// Orientation used throughout this file. Weights are stored PyTorch-style
// [out, in]: W (kvDim, hidden) with K = X·Wᵀ for X (n, hidden). The exported
// factors are [out, in] too: A (rank, hidden), B (kvDim, rank), so that
// K̂ = X·Aᵀ·Bᵀ and W ≈ B·A. docs/METHOD.md §2 states the initialisations in
// the "math" orientation M = Wᵀ (hidden, kvDim), Aᵀ (hidden, rank),
// Bᵀ (rank, kvDim); the comments below write those Wk, Ak and Bk.

// asvdEps is the offset of docs/METHOD.md §2: s = (mean|x| + 1e-6)^α.
const asvdEps = 1e-6

// defaultRelRidge is the starting ridge of InitWhiten relative to the mean
// diagonal of XᵀX (trace / hidden).
const defaultRelRidge = 1e-6

// maxRidgeTries bounds the ×10 ridge increases of InitWhiten.
const maxRidgeTries = 30

// RankFromDensity is the reference code's rank rule: int(density × headDim)
// channels per head, times nKVHeads, so ranks stay a multiple of the head count.
func RankFromDensity(density float64, headDim, nKVHeads int) (int, error) {
	if !(density > 0 && density < 1) {
		return 0, fmt.Errorf("density %v outside (0, 1)", density)
	}
	if headDim <= 0 || nKVHeads <= 0 {
		return 0, fmt.Errorf("density %v: invalid head_dim %d or n_kv_heads %d", density, headDim, nKVHeads)
	}
	perHead := int(density * float64(headDim))
	if perHead < 1 {
		return 0, fmt.Errorf("density %v × head_dim %d keeps %d channels per head; need at least 1", density, headDim, perHead)
	}
	return perHead * nKVHeads, nil
}

// InitSVD is the plain SVD init: with Wk = Wᵀ = U·S·Vᵀ keep the top rank,
// Ak = U_r·sqrt(S_r), Bk = sqrt(S_r)·V_rᵀ. Returns A (rank, hidden) and
// B (kvDim, rank). Computed in float64.
func InitSVD(W []float32 /* (kvDim, hidden) */, kvDim, hidden, rank int) (A, B []float32, err error) {
	if err := checkInitArgs(W, kvDim, hidden, rank); err != nil {
		return nil, nil, fmt.Errorf("svd init: %w", err)
	}
	y := weightMath(W, kvDim, hidden, nil) // (hidden, kvDim)
	z, b, err := topFactors(y, hidden, kvDim, rank)
	if err != nil {
		return nil, nil, fmt.Errorf("svd init: %w", err)
	}
	return transposeTo32(z, hidden, rank), to32(b), nil
}

// InitASVD is the activation-aware SVD init: s_c = (meanAbs_c + 1e-6)^α,
// SVD of diag(s)·Wk, Ak = diag(1/s)·U_r·sqrt(S_r), Bk = sqrt(S_r)·V_rᵀ.
// meanAbs (hidden) is the mean over calibration tokens of |x_c| at the k/v
// projection input (Stats.MeanAbs); α is 0.5 in the reference. Returns
// A (rank, hidden) and B (kvDim, rank).
func InitASVD(W []float32 /* (kvDim, hidden) */, kvDim, hidden, rank int, meanAbs []float64 /* (hidden) */, alpha float64) (A, B []float32, err error) {
	if err := checkInitArgs(W, kvDim, hidden, rank); err != nil {
		return nil, nil, fmt.Errorf("asvd init: %w", err)
	}
	if len(meanAbs) != hidden {
		return nil, nil, fmt.Errorf("asvd init: mean |x| has %d channels, want hidden %d", len(meanAbs), hidden)
	}
	if math.IsNaN(alpha) || math.IsInf(alpha, 0) {
		return nil, nil, fmt.Errorf("asvd init: alpha %v is not finite", alpha)
	}
	scale := make([]float64, hidden) // (hidden)
	for c, m := range meanAbs {
		if !(m >= 0) || math.IsInf(m, 0) {
			return nil, nil, fmt.Errorf("asvd init: mean |x| of channel %d is %v; want finite and ≥ 0", c, m)
		}
		scale[c] = math.Pow(m+asvdEps, alpha)
		if !(scale[c] > 0) || math.IsInf(scale[c], 0) {
			return nil, nil, fmt.Errorf("asvd init: channel %d scale (%v + %g)^%v = %v is not a positive finite number", c, m, asvdEps, alpha, scale[c])
		}
	}
	y := weightMath(W, kvDim, hidden, scale) // (hidden, kvDim) = diag(s)·Wk
	z, b, err := topFactors(y, hidden, kvDim, rank)
	if err != nil {
		return nil, nil, fmt.Errorf("asvd init: %w", err)
	}
	for c := 0; c < hidden; c++ {
		row := z[c*rank : (c+1)*rank]
		for i := range row {
			row[i] /= scale[c]
		}
	}
	return transposeTo32(z, hidden, rank), to32(b), nil
}

// InitWhiten is the whitened SVD init, the exact minimiser of the KV loss
// ‖X·Wk − X·Ak·Bk‖ over rank-r factors on the calibration set (up to the
// ridge): with XᵀX + λI = Rᵀ·R (R = Lᵀ from the Cholesky factor L),
// Ak = R⁻¹·U_r·sqrt(S_r), Bk = sqrt(S_r)·V_rᵀ where U·S·Vᵀ = SVD(R·Wk).
//
// gram (hidden, hidden) is XᵀX (Stats.Gram). The ridge λ starts at ridge if
// ridge > 0, otherwise at 1e-6 × trace(XᵀX)/hidden, and is multiplied by 10
// until the Cholesky factorisation succeeds, so rank-deficient XᵀX (fewer
// tokens than channels, duplicated or dead channels) works. ridgeUsed is the
// λ finally used. Returns A (rank, hidden) and B (kvDim, rank).
func InitWhiten(W []float32 /* (kvDim, hidden) */, kvDim, hidden, rank int, gram []float64 /* (hidden, hidden) */, ridge float64) (A, B []float32, ridgeUsed float64, err error) {
	if err := checkInitArgs(W, kvDim, hidden, rank); err != nil {
		return nil, nil, 0, fmt.Errorf("whitened init: %w", err)
	}
	if len(gram) != hidden*hidden {
		return nil, nil, 0, fmt.Errorf("whitened init: XᵀX has %d elements, want %d×%d", len(gram), hidden, hidden)
	}
	if math.IsNaN(ridge) || math.IsInf(ridge, 0) {
		return nil, nil, 0, fmt.Errorf("whitened init: ridge %v is not finite", ridge)
	}
	var trace float64
	for c := 0; c < hidden; c++ {
		trace += gram[c*hidden+c]
	}
	if math.IsNaN(trace) || math.IsInf(trace, 0) {
		return nil, nil, 0, fmt.Errorf("whitened init: trace of XᵀX is %v", trace)
	}
	lambda := ridge
	if lambda <= 0 {
		lambda = defaultRelRidge * trace / float64(hidden)
		if !(lambda > 0) {
			lambda = defaultRelRidge // XᵀX is zero: whitening degenerates to plain SVD
		}
	}

	var l []float64 // (hidden, hidden), lower: XᵀX + λI = L·Lᵀ
	g := make([]float64, hidden*hidden)
	for try := 0; ; try++ {
		copy(g, gram)
		for c := 0; c < hidden; c++ {
			g[c*hidden+c] += lambda
		}
		l, err = linalg.Cholesky(g, hidden)
		if err == nil {
			break
		}
		if !errors.Is(err, linalg.ErrNotPositiveDefinite) {
			return nil, nil, 0, fmt.Errorf("whitened init: ridge %g: %w", lambda, err)
		}
		if try+1 >= maxRidgeTries {
			return nil, nil, 0, fmt.Errorf("whitened init: XᵀX + λI still not positive definite at ridge %g after %d tries: %w", lambda, maxRidgeTries, err)
		}
		lambda *= 10
	}

	impl := linalg.BLAS()
	y := weightMath(W, kvDim, hidden, nil) // (hidden, kvDim) = Wk
	// y = R·Wk = Lᵀ·Wk
	impl.Dtrmm(blas.Left, blas.Lower, blas.Trans, blas.NonUnit, hidden, kvDim, 1, l, hidden, y, kvDim)
	z, b, err := topFactors(y, hidden, kvDim, rank)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("whitened init: ridge %g: %w", lambda, err)
	}
	// z = R⁻¹·U_r·sqrt(S_r): solve Lᵀ·Z' = z in place.
	impl.Dtrsm(blas.Left, blas.Lower, blas.Trans, blas.NonUnit, hidden, rank, 1, l, hidden, z, rank)
	if err := linalg.CheckFinite(z); err != nil {
		return nil, nil, 0, fmt.Errorf("whitened init: ridge %g: factor A: %w", lambda, err)
	}
	return transposeTo32(z, hidden, rank), to32(b), lambda, nil
}

// topFactors takes y (hidden, kvDim) in math orientation, computes its thin SVD
// U·S·Vᵀ and returns z = U_r·sqrt(S_r) (hidden, rank) and the exported
// B = (sqrt(S_r)·V_rᵀ)ᵀ = V_r·sqrt(S_r) (kvDim, rank).
func topFactors(y []float64, hidden, kvDim, rank int) (z, b []float64, err error) {
	u, s, vt, err := linalg.SVD(y, hidden, kvDim) // u (hidden, k), s (k), vt (k, kvDim)
	if err != nil {
		return nil, nil, err
	}
	k := len(s)
	root := make([]float64, rank) // (rank)
	for i := range root {
		root[i] = math.Sqrt(s[i])
	}
	z = make([]float64, hidden*rank) // (hidden, rank)
	for c := 0; c < hidden; c++ {
		for i := 0; i < rank; i++ {
			z[c*rank+i] = u[c*k+i] * root[i]
		}
	}
	b = make([]float64, kvDim*rank) // (kvDim, rank)
	for i := 0; i < rank; i++ {
		for j := 0; j < kvDim; j++ {
			b[j*rank+i] = vt[i*kvDim+j] * root[i]
		}
	}
	return z, b, nil
}

// weightMath returns Wk = Wᵀ (hidden, kvDim) in float64, each row c scaled by
// scale[c] when scale is not nil.
func weightMath(W []float32, kvDim, hidden int, scale []float64) []float64 {
	y := make([]float64, hidden*kvDim) // (hidden, kvDim)
	for j := 0; j < kvDim; j++ {
		row := W[j*hidden : (j+1)*hidden]
		for c, v := range row {
			y[c*kvDim+j] = float64(v)
		}
	}
	if scale != nil {
		for c := 0; c < hidden; c++ {
			r := y[c*kvDim : (c+1)*kvDim]
			for j := range r {
				r[j] *= scale[c]
			}
		}
	}
	return y
}

func checkInitArgs(W []float32, kvDim, hidden, rank int) error {
	if kvDim <= 0 || hidden <= 0 {
		return fmt.Errorf("invalid weight shape (kv_dim %d, hidden %d)", kvDim, hidden)
	}
	if len(W) != kvDim*hidden {
		return fmt.Errorf("weight has %d elements, want kv_dim %d × hidden %d", len(W), kvDim, hidden)
	}
	if rank < 1 || rank > min(kvDim, hidden) {
		return fmt.Errorf("rank %d outside [1, min(kv_dim %d, hidden %d)]", rank, kvDim, hidden)
	}
	for i, v := range W {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("weight element (%d, %d) is %v", i/hidden, i%hidden, v)
		}
	}
	return nil
}

// transposeTo32 returns the float32 transpose (cols, rows) of z (rows, cols).
func transposeTo32(z []float64, rows, cols int) []float32 {
	out := make([]float32, rows*cols) // (cols, rows)
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			out[c*rows+r] = float32(z[r*cols+c])
		}
	}
	return out
}

func to32(a []float64) []float32 {
	out := make([]float32, len(a))
	for i, v := range a {
		out[i] = float32(v)
	}
	return out
}
