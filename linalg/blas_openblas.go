//go:build openblas

package linalg

// #cgo LDFLAGS: -lopenblas
import "C"

import "gonum.org/v1/netlib/blas/netlib"

var impl Impl = netlib.Implementation{}

const backend = "OpenBLAS (cgo, gonum.org/v1/netlib)"
