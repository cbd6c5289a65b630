//go:build !openblas

package linalg

import "gonum.org/v1/gonum/blas/gonum"

var impl Impl = gonum.Implementation{}

const backend = "gonum (pure Go)"

// SetThreads is a no-op for gonum's BLAS, which sizes its own parallelism.
func SetThreads(int) {}

// Threads reports 0: gonum chooses per call.
func Threads() int { return 0 }
