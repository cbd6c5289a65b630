package alloc

import (
	"fmt"
	"math"

	"github.com/cskv/cskv/linalg"
)

// TailCurve returns the closed-form reconstruction error of every rank of one
// side: tail[r] (r = 0 … kvDim) is min over rank-r factors of
// ‖X·Wᵀ − X·Aᵀ·Bᵀ‖²_F, summed over the n rows whose Gram matrix is gram.
//
// The factors reach exactly the rank-r matrices X·Aᵀ·Bᵀ inside the column
// space of X, which holds X·Wᵀ and therefore its best rank-r approximation
// (Eckart–Young), so the minimum is Σ_{i ≥ r} μ_i with μ_0 ≥ μ_1 ≥ … the
// squared singular values of X·Wᵀ, i.e. the eigenvalues of
// P = W·XᵀX·Wᵀ (kvDim, kvDim). tail[0] = trace(P) = ‖X·Wᵀ‖². The whitened
// init (docs/METHOD.md §2) attains it up to its ridge. Dividing by n·kvDim
// gives the KV term's MSE; by tail[0], the relative error.
//
// W (kvDim, hidden), gram (hidden, hidden) = XᵀX. Eigenvalues below zero
// (rounding) count as zero. Cost: 2·kvDim·hidden·(hidden + kvDim) flops for P
// and one symmetric eigendecomposition of size kvDim.
func TailCurve(W []float32 /* (kvDim, hidden) */, gram []float64 /* (hidden, hidden) */, kvDim, hidden int) ([]float64, error) {
	if kvDim <= 0 || hidden <= 0 {
		return nil, fmt.Errorf("tail curve: invalid shape kv_dim %d, hidden %d", kvDim, hidden)
	}
	if len(W) != kvDim*hidden {
		return nil, fmt.Errorf("tail curve: weight has %d elements, want kv_dim %d × hidden %d", len(W), kvDim, hidden)
	}
	if len(gram) != hidden*hidden {
		return nil, fmt.Errorf("tail curve: XᵀX has %d elements, want %d×%d", len(gram), hidden, hidden)
	}
	w := make([]float64, len(W)) // (kvDim, hidden)
	for i, v := range W {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("tail curve: weight element (%d, %d) is %v", i/hidden, i%hidden, v)
		}
		w[i] = float64(v)
	}
	wg := make([]float64, kvDim*hidden) // (kvDim, hidden) = W·XᵀX
	linalg.Gemm64(false, false, kvDim, hidden, hidden, 1, w, hidden, gram, hidden, 0, wg, hidden)
	p := make([]float64, kvDim*kvDim) // (kvDim, kvDim) = W·XᵀX·Wᵀ
	linalg.Gemm64(false, true, kvDim, kvDim, hidden, 1, wg, hidden, w, hidden, 0, p, kvDim)
	vals, _, err := linalg.SymEig(p, kvDim) // ascending
	if err != nil {
		return nil, fmt.Errorf("tail curve: %w", err)
	}
	tail := make([]float64, kvDim+1)
	// tail[r] = Σ of the kvDim − r smallest eigenvalues, summed from the
	// smallest up so that small tails keep their precision.
	for r := kvDim - 1; r >= 0; r-- {
		mu := max(vals[kvDim-1-r], 0)
		tail[r] = tail[r+1] + mu
	}
	return tail, nil
}

// Grid returns the candidate ranks step, 2·step, … up to kvDim (and kvDim
// itself). step is the rank granularity the side's quantisation groups need
// (the kv head count for per-token groups, 1 otherwise); when that gives more
// than maxPoints ranks (maxPoints > 0) the step is multiplied until it does
// not, so it stays on the groups' grid.
func Grid(kvDim, step, maxPoints int) ([]int, error) {
	if kvDim < 1 || step < 1 || step > kvDim {
		return nil, fmt.Errorf("rank grid: step %d for kv_dim %d", step, kvDim)
	}
	s := step
	for maxPoints > 0 && kvDim/s > maxPoints {
		s += step
	}
	var g []int
	for r := s; r <= kvDim; r += s {
		g = append(g, r)
	}
	if g[len(g)-1] != kvDim {
		g = append(g, kvDim)
	}
	return g, nil
}
