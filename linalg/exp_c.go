//go:build openblas

package linalg

// #cgo CFLAGS: -O3
// float cskv_exp_shift(float *x, long n, float m);
import "C"

// minVecExp is the shortest slice ExpShift hands to C: below it the cgo
// call costs more than the vector instructions save.
const minVecExp = 64

func expShiftVec(x []float32, m float32) float32 {
	return float32(C.cskv_exp_shift((*C.float)(&x[0]), C.long(len(x)), C.float(m)))
}
