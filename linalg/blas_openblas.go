//go:build openblas

package linalg

// #cgo LDFLAGS: -lopenblas
// void openblas_set_num_threads(int);
// int openblas_get_num_threads(void);
import "C"

import "gonum.org/v1/netlib/blas/netlib"

var impl Impl = netlib.Implementation{}

const backend = "OpenBLAS (cgo, gonum.org/v1/netlib)"

// SetThreads sets how many threads BLAS products may use (OpenBLAS's global
// setting). Small products run faster on one thread: threads spin more than
// they compute.
func SetThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

// Threads reports the BLAS thread count.
func Threads() int { return int(C.openblas_get_num_threads()) }
