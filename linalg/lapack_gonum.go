//go:build !openblas

package linalg

import (
	"errors"
	"fmt"

	"gonum.org/v1/gonum/mat"
)

const lapackBackend = "gonum (pure Go)"

func svdImpl(a []float64, m, n int) (u, s, vt []float64, err error) {
	k := min(m, n)
	var svd mat.SVD
	if !svd.Factorize(mat.NewDense(m, n, a), mat.SVDThin) {
		return nil, nil, nil, errors.New("svd failed to converge")
	}
	s = svd.Values(nil) // (k), descending
	var ud, vd mat.Dense
	svd.UTo(&ud) // (m, k)
	svd.VTo(&vd) // (n, k)
	u = denseRows(&ud, m, k)
	vt = make([]float64, k*n) // (k, n)
	raw := vd.RawMatrix()
	for i := 0; i < n; i++ {
		row := raw.Data[i*raw.Stride : i*raw.Stride+k]
		for j, v := range row {
			vt[j*n+i] = v
		}
	}
	return u, s, vt, nil
}

func symEigImpl(a []float64, n int) (vals, vecs []float64, err error) {
	var eig mat.EigenSym
	if !eig.Factorize(mat.NewSymDense(n, a), true) {
		return nil, nil, errors.New("symmetric eigendecomposition failed to converge")
	}
	vals = eig.Values(nil) // (n), ascending
	var q mat.Dense
	eig.VectorsTo(&q) // (n, n), columns = eigenvectors
	return vals, denseRows(&q, n, n), nil
}

func choleskyImpl(a []float64, n int) (l []float64, err error) {
	var ch mat.Cholesky
	if !ch.Factorize(mat.NewSymDense(n, a)) {
		return nil, fmt.Errorf("gonum cholesky: %w", ErrNotPositiveDefinite)
	}
	var t mat.TriDense
	ch.LTo(&t)
	raw := t.RawTriangular()
	l = make([]float64, n*n) // (n, n), lower
	for i := 0; i < n; i++ {
		copy(l[i*n:i*n+i+1], raw.Data[i*raw.Stride:i*raw.Stride+i+1])
	}
	return l, nil
}

// denseRows copies a gonum Dense (r, c) into a contiguous row-major slice.
func denseRows(d *mat.Dense, r, c int) []float64 {
	raw := d.RawMatrix()
	out := make([]float64, r*c) // (r, c)
	for i := 0; i < r; i++ {
		copy(out[i*c:(i+1)*c], raw.Data[i*raw.Stride:i*raw.Stride+c])
	}
	return out
}
