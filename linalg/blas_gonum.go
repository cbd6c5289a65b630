//go:build !openblas

package linalg

import "gonum.org/v1/gonum/blas/gonum"

var impl Impl = gonum.Implementation{}

const backend = "gonum (pure Go)"
