package linalg

import (
	"sync/atomic"
	"time"
)

// ProductStats is the arithmetic and time of the float32 products (Gemm32,
// Gemm32Serial and what calls them) since CountProducts(true).
type ProductStats struct {
	Calls         int64
	FLOP          float64 // 2·m·n·k per product
	Seconds       float64 // wall time of the threaded products (Gemm32)
	SerialSeconds float64 // time of the single-threaded ones (Gemm32Serial), summed over the threads issuing them
}

// Busy is the products' share of the wall time: the threaded products'
// time plus the serial ones' spread over cores (they run one per core).
func (s ProductStats) Busy(cores int) float64 {
	return s.Seconds + s.SerialSeconds/float64(max(cores, 1))
}

// Plus is s and t together.
func (s ProductStats) Plus(t ProductStats) ProductStats {
	return ProductStats{Calls: s.Calls + t.Calls, FLOP: s.FLOP + t.FLOP, Seconds: s.Seconds + t.Seconds, SerialSeconds: s.SerialSeconds + t.SerialSeconds}
}

var counting atomic.Bool

var counts struct {
	calls, flop, ns, serialNs atomic.Int64 // flop in units of 2 (m·n·k)
}

// CountProducts starts (on) or stops counting products, and returns what
// was counted since it was last started (zero when it was not).
func CountProducts(on bool) ProductStats {
	s := ProductStats{Calls: counts.calls.Load(), FLOP: 2 * float64(counts.flop.Load()),
		Seconds: float64(counts.ns.Load()) / 1e9, SerialSeconds: float64(counts.serialNs.Load()) / 1e9}
	counts.calls.Store(0)
	counts.flop.Store(0)
	counts.ns.Store(0)
	counts.serialNs.Store(0)
	counting.Store(on)
	return s
}

// countProduct adds one (m, n, k) product that began at t0.
func countProduct(serial bool, m, n, k int, t0 time.Time) {
	ns := time.Since(t0).Nanoseconds()
	counts.calls.Add(1)
	counts.flop.Add(int64(m) * int64(n) * int64(k))
	if serial {
		counts.serialNs.Add(ns)
	} else {
		counts.ns.Add(ns)
	}
}
