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
	dnnl      bool    // oneDNN computed it (else BLAS)
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
		prod := blasPeakProduct(m, n, k)
		best.GFLOPs, best.Kernel = prod.rate(seconds), prod.kernel
		if hasDNNL {
			if prod, err := dnnlPeakProduct(false, m, n, k); err == nil {
				if g := prod.rate(seconds); g > best.GFLOPs {
					best.GFLOPs, best.Kernel, best.dnnl = g, prod.kernel, true
				}
			}
		}
	case BF16:
		prod, err := dnnlPeakProduct(true, m, n, k)
		if err != nil {
			return best, err
		}
		best.GFLOPs, best.Kernel, best.dnnl = prod.rate(seconds), prod.kernel, true
	default:
		return best, fmt.Errorf("peak of precision %v: want f32 or bf16", p)
	}
	return best, nil
}

// A Probe times a measured peak's product again (the same shape, precision
// and kernel, on operands of its own), one sample at a time: the rate the
// machine gives that product now. On a machine shared with other work the
// rate moves from minute to minute; a sample taken beside a step sees the
// step's conditions.
type Probe struct{ prod peakProduct }

// NewProbe prepares the product of r (a result of Peak).
func NewProbe(r PeakResult) (*Probe, error) {
	if !r.dnnl {
		return &Probe{blasPeakProduct(r.M, r.N, r.K)}, nil
	}
	prod, err := dnnlPeakProduct(r.Precision == BF16, r.M, r.N, r.K)
	if err != nil {
		return nil, err
	}
	return &Probe{prod}, nil
}

// Sample returns the product's rate now in GFLOP/s: the fastest of three
// runs (bestTime).
func (p *Probe) Sample() float64 { return p.prod.rate(0) }

// peakProduct is one product of Peak, ready to time: run computes it on
// operands already in its precision.
type peakProduct struct {
	run    func()
	flop   float64 // 2·m·n·k
	kernel string
}

// rate is the product's GFLOP/s, timed by bestTime(seconds).
func (p peakProduct) rate(seconds float64) float64 { return p.flop / bestTime(seconds, p.run) / 1e9 }

// peakOperands are A (m, k) and B (k, n) of small integers (exact in bf16)
// and C (m, n).
func peakOperands(m, n, k int) (a, b, c []float32) {
	a, b, c = make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
	for i := range a {
		a[i] = float32(i%7) - 3
	}
	for i := range b {
		b[i] = float32(i%5) - 2
	}
	return a, b, c
}

// blasPeakProduct is BLAS's dense product, warmed up.
func blasPeakProduct(m, n, k int) peakProduct {
	a, b, c := peakOperands(m, n, k)
	run := func() { impl.Sgemm(trans(false), trans(false), m, n, k, 1, a, k, b, n, 0, c, n) }
	run()
	return peakProduct{run: run, flop: 2 * float64(m) * float64(n) * float64(k), kernel: Backend()}
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
