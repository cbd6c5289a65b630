package alloc

import (
	"fmt"
	"math"
)

// Option is one candidate rank of a layer-side: its cost in bytes (of
// UnitTokens tokens) and its error.
type Option struct {
	Rank  int
	Bytes int64
	Err   float64
}

// Item is one layer-side and its candidate ranks.
type Item struct {
	Layer   int
	Side    Side
	Options []Option
}

// maxCells bounds the knapsack's choice table (items × capacity / gcd).
const maxCells = 1 << 27

// Solve is the multiple-choice knapsack of the allocation: pick exactly one
// option per item so that the summed bytes stay within capacity and the
// summed error is smallest. It is exact: a dynamic programme over the total
// cost in units of the greatest common divisor of all costs. Ties go to the
// cheaper total, then to the earlier options. choice[i] indexes
// items[i].Options.
func Solve(items []Item, capacity int64) (choice []int, err error) {
	if len(items) == 0 {
		return nil, fmt.Errorf("knapsack: no items")
	}
	var g, minTotal, maxTotal int64
	for i, it := range items {
		if len(it.Options) == 0 || len(it.Options) > math.MaxInt16 {
			return nil, fmt.Errorf("knapsack: layer %d %s has %d options", it.Layer, it.Side, len(it.Options))
		}
		lo, hi := int64(math.MaxInt64), int64(0)
		for _, o := range it.Options {
			if o.Bytes < 0 || math.IsNaN(o.Err) || math.IsInf(o.Err, 0) {
				return nil, fmt.Errorf("knapsack: item %d (layer %d %s) rank %d: bytes %d, error %v", i, it.Layer, it.Side, o.Rank, o.Bytes, o.Err)
			}
			g = gcd(g, o.Bytes)
			lo, hi = min(lo, o.Bytes), max(hi, o.Bytes)
		}
		minTotal += lo
		maxTotal += hi
	}
	if minTotal > capacity {
		return nil, fmt.Errorf("knapsack: the budget of %d bytes is below the smallest plan (every side at its lowest rank: %d bytes)", capacity, minTotal)
	}
	if g == 0 {
		g = 1 // every option is free
	}
	c := min(capacity, maxTotal) / g // capacity in units
	if cells := int64(len(items)) * (c + 1); cells > maxCells {
		return nil, fmt.Errorf("knapsack: %d items × %d cost units is too large a table; use a coarser rank grid", len(items), c+1)
	}
	inf := math.Inf(1)
	dp := make([]float64, c+1) // dp[u]: least error of the items so far at total cost exactly u units
	next := make([]float64, c+1)
	for u := range dp {
		dp[u] = inf
	}
	dp[0] = 0
	pick := make([][]int16, len(items)) // pick[i][u]: option of item i on the best path to u
	for i, it := range items {
		p := make([]int16, c+1)
		for u := range next {
			next[u] = inf
		}
		for j, o := range it.Options {
			w := o.Bytes / g
			for u := w; u <= c; u++ {
				if prev := dp[u-w]; prev != inf {
					if e := prev + o.Err; e < next[u] {
						next[u], p[u] = e, int16(j)
					}
				}
			}
		}
		pick[i] = p
		dp, next = next, dp
	}
	best := int64(-1)
	for u := int64(0); u <= c; u++ {
		if dp[u] != inf && (best < 0 || dp[u] < dp[best]) {
			best = u
		}
	}
	if best < 0 {
		return nil, fmt.Errorf("knapsack: no plan fits %d bytes", capacity)
	}
	choice = make([]int, len(items))
	for i := len(items) - 1; i >= 0; i-- {
		j := int(pick[i][best])
		choice[i] = j
		best -= items[i].Options[j].Bytes / g
	}
	return choice, nil
}

// Choose runs the knapsack over the curves (one per layer and side, each with
// Bytes and Err filled) within capacity bytes, sets every curve's Rank and
// returns the total bytes of the choice.
func Choose(curves []Curve, capacity int64) (int64, error) {
	items := make([]Item, len(curves))
	for i, c := range curves {
		if len(c.Ranks) == 0 || len(c.Bytes) != len(c.Ranks) || len(c.Err) != len(c.Ranks) {
			return 0, fmt.Errorf("allocation: layer %d %s: %d ranks, %d byte counts, %d errors", c.Layer, c.Side, len(c.Ranks), len(c.Bytes), len(c.Err))
		}
		it := Item{Layer: c.Layer, Side: c.Side}
		for j, r := range c.Ranks {
			it.Options = append(it.Options, Option{Rank: r, Bytes: c.Bytes[j], Err: c.Err[j]})
		}
		items[i] = it
	}
	choice, err := Solve(items, capacity)
	if err != nil {
		return 0, fmt.Errorf("allocation: %w", err)
	}
	var total int64
	for i, j := range choice {
		curves[i].Rank = curves[i].Ranks[j]
		total += curves[i].Bytes[j]
	}
	return total, nil
}
