package linalg

import (
	"fmt"
	"time"
)

// PeakShapes are the products at which Peak is measured: the largest ones
// of a Llama-3-8B layer on 2048 tokens, (m, n, k) for C (m, n) = A (m, k)·B (k, n).
var PeakShapes = [][3]int{{2048, 4096, 4096}, {2048, 1024, 4096}, {2048, 512, 4096}}

// PeakResult is a measured matrix-product rate.
type PeakResult struct {
	Precision Precision
	M, N, K   int
	GFLOPs    float64 // 2·m·n·k per product
	Kernel    string  // what computed it
}

// Peak measures the fastest matrix-product rate this build has for the
// precision p (F32 or BF16) at one (m, n, k), for at least seconds per
// candidate: dense operands already in p's format (the rounding to bf16 is
// not timed), the fastest of several products. F32 candidates are BLAS and, in the
// oneDNN build, oneDNN; BF16 is oneDNN's only.
func Peak(p Precision, m, n, k int, seconds float64) (PeakResult, error) {
	best := PeakResult{Precision: p, M: m, N: n, K: k}
	switch p {
	case F32:
		best.GFLOPs, best.Kernel = blasPeak(m, n, k, seconds), Backend()
		if hasDNNL {
			if g, kernel, err := dnnlPeak(false, m, n, k, seconds); err == nil && g > best.GFLOPs {
				best.GFLOPs, best.Kernel = g, "oneDNN "+kernel
			}
		}
	case BF16:
		g, kernel, err := dnnlPeak(true, m, n, k, seconds)
		if err != nil {
			return best, err
		}
		best.GFLOPs, best.Kernel = g, "oneDNN "+kernel
	default:
		return best, fmt.Errorf("peak of precision %v: want f32 or bf16", p)
	}
	return best, nil
}

func blasPeak(m, n, k int, seconds float64) float64 {
	a, b, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
	for i := range a {
		a[i] = float32(i%7) - 3
	}
	for i := range b {
		b[i] = float32(i%5) - 2
	}
	impl.Sgemm(trans(false), trans(false), m, n, k, 1, a, k, b, n, 0, c, n) // warm-up
	best := bestTime(seconds, func() { impl.Sgemm(trans(false), trans(false), m, n, k, 1, a, k, b, n, 0, c, n) })
	return 2 * float64(m) * float64(n) * float64(k) / best / 1e9
}

// bestTime runs f at least 3 times and for at least seconds, and returns the
// shortest run in seconds: the machine's rate, least disturbed by whatever
// else runs on it.
func bestTime(seconds float64, f func()) float64 {
	best := 0.0
	t0 := time.Now()
	for runs := 0; runs < 3 || time.Since(t0).Seconds() < seconds; runs++ {
		t := time.Now()
		f()
		if el := time.Since(t).Seconds(); runs == 0 || el < best {
			best = el
		}
	}
	return best
}
