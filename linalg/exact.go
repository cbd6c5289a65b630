package linalg

import (
	"runtime"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/blas/gonum"
)

// exact, when set, makes MatMulT compute every output element as one dot
// product over the whole inner dimension (Dot), so that a row's result does
// not depend on how many other rows are in the product. Token-by-token
// decoding then reproduces a parallel forward bit for bit. It is slower than
// BLAS and off by default.
var exact atomic.Bool

// SetExact switches MatMulT between BLAS (false) and the row-exact kernel.
func SetExact(on bool) { exact.Store(on) }

// Exact reports whether the row-exact kernel is in use.
func Exact() bool { return exact.Load() }

// vec is gonum's assembly vector kernels (not threaded, no cgo).
var vec gonum.Implementation

// Dot returns Σ a[i]·b[i] (len(a) == len(b)): gonum's SIMD kernel, or in
// exact mode a fixed-order loop whose rounding depends only on the values
// (the SIMD kernel's depends on the slices' memory alignment).
func Dot(a, b []float32) float32 {
	if exact.Load() {
		return dotFixed(a, b)
	}
	return vec.Sdot(len(a), a, 1, b, 1)
}

// dotFixed sums with four accumulators in a fixed order.
func dotFixed(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float32(a[i] * b[i]) // conversions forbid fused multiply-adds
		s1 += float32(a[i+1] * b[i+1])
		s2 += float32(a[i+2] * b[i+2])
		s3 += float32(a[i+3] * b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float32(a[i] * b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// Axpy computes y += alpha·x elementwise (len(x) ≥ len(y)).
func Axpy(alpha float32, x, y []float32) { vec.Saxpy(len(y), alpha, x, 1, y, 1) }

// matMulTExact is C = A·Bᵀ (+ C) with one Dot per element, rows in parallel.
func matMulTExact(c, a, b []float32, m, n, k int, accumulate bool) {
	workers := min(runtime.GOMAXPROCS(0), m)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < m; i += workers {
				ai := a[i*k : (i+1)*k]
				ci := c[i*n : (i+1)*n]
				for j := range ci {
					d := Dot(ai, b[j*k:(j+1)*k])
					if accumulate {
						ci[j] += d
					} else {
						ci[j] = d
					}
				}
			}
		}(w)
	}
	wg.Wait()
}
