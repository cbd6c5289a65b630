package linalg

import (
	"errors"
	"fmt"
	"math"
)

// ErrNotPositiveDefinite is returned (wrapped) by Cholesky when the matrix is
// not numerically positive definite; callers may add a ridge and retry.
var ErrNotPositiveDefinite = errors.New("matrix is not positive definite")

// LAPACKBackend names the LAPACK implementation chosen at build time (the
// "openblas" tag selects LAPACKE over OpenBLAS, otherwise gonum's pure Go).
func LAPACKBackend() string { return lapackBackend }

// SVD computes the thin singular value decomposition A = U·diag(S)·Vᵀ of the
// row-major matrix a (m, n), with k = min(m, n):
//
//	u  (m, k): left singular vectors as orthonormal columns
//	s  (k):    singular values, descending
//	vt (k, n): right singular vectors as orthonormal rows
//
// a is not modified. Signs of singular vector pairs are backend dependent.
func SVD(a []float64, m, n int) (u, s, vt []float64, err error) {
	if m <= 0 || n <= 0 {
		return nil, nil, nil, fmt.Errorf("svd: invalid shape (%d, %d)", m, n)
	}
	if len(a) != m*n {
		return nil, nil, nil, fmt.Errorf("svd: matrix has %d elements, want %d×%d = %d", len(a), m, n, m*n)
	}
	if err := CheckFinite(a); err != nil {
		return nil, nil, nil, fmt.Errorf("svd (%d, %d): %w", m, n, err)
	}
	u, s, vt, err = svdImpl(append([]float64(nil), a...), m, n)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("svd (%d, %d) with %s: %w", m, n, lapackBackend, err)
	}
	return u, s, vt, nil
}

// SymEig computes the eigendecomposition A = Q·diag(vals)·Qᵀ of the symmetric
// row-major matrix a (n, n). vals (n) are in ASCENDING order; vecs (n, n) is
// row-major with the eigenvectors as orthonormal COLUMNS (column j belongs to
// vals[j]). The input is symmetrised as (A + Aᵀ)/2 first, so both backends see
// the same matrix whichever triangle they read. a is not modified.
func SymEig(a []float64, n int) (vals, vecs []float64, err error) {
	if n <= 0 {
		return nil, nil, fmt.Errorf("symmetric eigen: invalid size %d", n)
	}
	if len(a) != n*n {
		return nil, nil, fmt.Errorf("symmetric eigen: matrix has %d elements, want %d×%d = %d", len(a), n, n, n*n)
	}
	if err := CheckFinite(a); err != nil {
		return nil, nil, fmt.Errorf("symmetric eigen (%d): %w", n, err)
	}
	vals, vecs, err = symEigImpl(symmetrised(a, n), n)
	if err != nil {
		return nil, nil, fmt.Errorf("symmetric eigen (%d) with %s: %w", n, lapackBackend, err)
	}
	return vals, vecs, nil
}

// Cholesky factors the symmetric positive definite row-major matrix a (n, n)
// as A = L·Lᵀ and returns L (n, n), row-major, lower triangular (the strict
// upper triangle is zero). The input is symmetrised as (A + Aᵀ)/2 first. If A
// is not positive definite the error wraps ErrNotPositiveDefinite. a is not
// modified.
func Cholesky(a []float64, n int) (l []float64, err error) {
	if n <= 0 {
		return nil, fmt.Errorf("cholesky: invalid size %d", n)
	}
	if len(a) != n*n {
		return nil, fmt.Errorf("cholesky: matrix has %d elements, want %d×%d = %d", len(a), n, n, n*n)
	}
	if err := CheckFinite(a); err != nil {
		return nil, fmt.Errorf("cholesky (%d): %w", n, err)
	}
	l, err = choleskyImpl(symmetrised(a, n), n)
	if err != nil {
		return nil, fmt.Errorf("cholesky (%d) with %s: %w", n, lapackBackend, err)
	}
	for i := 0; i < n; i++ {
		clear(l[i*n+i+1 : (i+1)*n])
	}
	return l, nil
}

// symmetrised returns a fresh copy of (A + Aᵀ)/2 for a (n, n).
func symmetrised(a []float64, n int) []float64 {
	out := make([]float64, n*n) // (n, n)
	for i := 0; i < n; i++ {
		out[i*n+i] = a[i*n+i]
		for j := i + 1; j < n; j++ {
			v := 0.5 * (a[i*n+j] + a[j*n+i])
			out[i*n+j] = v
			out[j*n+i] = v
		}
	}
	return out
}

// CheckFinite returns an error naming the first NaN or infinite element of
// a, or nil.
func CheckFinite(a []float64) error {
	for i, v := range a {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("non-finite element %v at flat index %d", v, i)
		}
	}
	return nil
}
