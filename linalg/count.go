package linalg

import (
	"cmp"
	"slices"
	"sync"
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
	// Shapes is the FLOP of the products per shape (m, n, k); nil when
	// nothing was counted.
	Shapes map[ProductShape]float64
}

// ProductShape is the shape of one product C (M, N) = op(A) (M, K)·op(B) (K, N).
type ProductShape struct{ M, N, K int }

// Busy is the products' share of the wall time: the threaded products'
// time plus the serial ones' spread over cores (they run one per core).
func (s ProductStats) Busy(cores int) float64 {
	return s.Seconds + s.SerialSeconds/float64(max(cores, 1))
}

// Plus is s and t together.
func (s ProductStats) Plus(t ProductStats) ProductStats {
	u := ProductStats{Calls: s.Calls + t.Calls, FLOP: s.FLOP + t.FLOP, Seconds: s.Seconds + t.Seconds, SerialSeconds: s.SerialSeconds + t.SerialSeconds}
	for _, m := range []map[ProductShape]float64{s.Shapes, t.Shapes} {
		for sh, f := range m {
			if u.Shapes == nil {
				u.Shapes = map[ProductShape]float64{}
			}
			u.Shapes[sh] += f
		}
	}
	return u
}

// Heavy is the shapes each carrying at least share of s's FLOP, the
// heaviest first (ties by shape): the products that decide how fast the
// counted work can run.
func (s ProductStats) Heavy(share float64) []ProductShape {
	var out []ProductShape
	for sh, f := range s.Shapes {
		if s.FLOP > 0 && f >= share*s.FLOP {
			out = append(out, sh)
		}
	}
	slices.SortFunc(out, func(a, b ProductShape) int {
		return cmp.Or(cmp.Compare(s.Shapes[b], s.Shapes[a]), cmp.Compare(a.M, b.M), cmp.Compare(a.N, b.N), cmp.Compare(a.K, b.K))
	})
	return out
}

var counting atomic.Bool

var counts struct {
	calls, flop, ns, serialNs atomic.Int64 // flop in units of 2 (m·n·k)
	mu                        sync.Mutex
	shapes                    map[ProductShape]float64 // under mu
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
	counts.mu.Lock()
	s.Shapes, counts.shapes = counts.shapes, nil
	counts.mu.Unlock()
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
	counts.mu.Lock()
	if counts.shapes == nil {
		counts.shapes = map[ProductShape]float64{}
	}
	counts.shapes[ProductShape{m, n, k}] += 2 * float64(m) * float64(n) * float64(k)
	counts.mu.Unlock()
}
