//go:build openblas

package linalg

// #cgo LDFLAGS: -llapacke -lopenblas
// #include <lapacke.h>
import "C"

import (
	"fmt"
	"math"
)

const lapackBackend = "LAPACKE over OpenBLAS (cgo)"

// The routines below call LAPACK in column-major layout on row-major buffers:
// a row-major (m, n) buffer is the column-major (n, m) matrix Aᵀ, which saves
// the transposing copies LAPACKE's row-major entry points would make.

func lapackDim(v int) (C.lapack_int, error) {
	if v <= 0 || int64(v) > math.MaxInt32 {
		return 0, fmt.Errorf("dimension %d out of range for LAPACK", v)
	}
	return C.lapack_int(v), nil
}

// svdImpl overwrites a (m, n). Column-major dgesdd of Aᵀ = V·S·Uᵀ gives
// "U" = V as a column-major (n, k) array, which is the row-major (k, n) Vᵀ, and
// "VT" = Uᵀ as a column-major (k, m) array, which is the row-major (m, k) U.
func svdImpl(a []float64, m, n int) (u, s, vt []float64, err error) {
	k := min(m, n)
	cm, err := lapackDim(m)
	if err != nil {
		return nil, nil, nil, err
	}
	cn, err := lapackDim(n)
	if err != nil {
		return nil, nil, nil, err
	}
	ck := C.lapack_int(k)
	u = make([]float64, m*k)  // (m, k)
	s = make([]float64, k)    // (k)
	vt = make([]float64, k*n) // (k, n)
	info := C.LAPACKE_dgesdd(C.LAPACK_COL_MAJOR, 'S', cn, cm,
		(*C.double)(&a[0]), cn,
		(*C.double)(&s[0]),
		(*C.double)(&vt[0]), cn,
		(*C.double)(&u[0]), ck)
	if info != 0 {
		return nil, nil, nil, lapackError("dgesdd", int(info))
	}
	return u, s, vt, nil
}

// symEigImpl overwrites the symmetric a (n, n); eigenvalues come back
// ascending and the eigenvectors as columns of a column-major array, which is
// transposed into the row-major result.
func symEigImpl(a []float64, n int) (vals, vecs []float64, err error) {
	cn, err := lapackDim(n)
	if err != nil {
		return nil, nil, err
	}
	vals = make([]float64, n) // (n)
	info := C.LAPACKE_dsyevd(C.LAPACK_COL_MAJOR, 'V', 'L', cn,
		(*C.double)(&a[0]), cn, (*C.double)(&vals[0]))
	if info != 0 {
		return nil, nil, lapackError("dsyevd", int(info))
	}
	vecs = make([]float64, n*n) // (n, n), columns = eigenvectors
	for j := 0; j < n; j++ {
		col := a[j*n : (j+1)*n]
		for i, v := range col {
			vecs[i*n+j] = v
		}
	}
	return vals, vecs, nil
}

// choleskyImpl overwrites the symmetric a (n, n). Column-major dpotrf with
// uplo 'U' computes A = Uᵀ·U in the column-major upper triangle, which is the
// row-major lower triangle holding L = Uᵀ. The caller zeroes the other half.
func choleskyImpl(a []float64, n int) (l []float64, err error) {
	cn, err := lapackDim(n)
	if err != nil {
		return nil, err
	}
	info := C.LAPACKE_dpotrf(C.LAPACK_COL_MAJOR, 'U', cn, (*C.double)(&a[0]), cn)
	if info > 0 {
		return nil, fmt.Errorf("dpotrf: leading minor of order %d: %w", int(info), ErrNotPositiveDefinite)
	}
	if info != 0 {
		return nil, lapackError("dpotrf", int(info))
	}
	return a, nil
}

func lapackError(routine string, info int) error {
	if info < 0 {
		return fmt.Errorf("%s: illegal value in argument %d", routine, -info)
	}
	return fmt.Errorf("%s: failed to converge (info %d)", routine, info)
}
