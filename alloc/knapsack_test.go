package alloc

import (
	"math"
	"math/rand/v2"
	"testing"
)

// bruteForce enumerates every combination of options.
func bruteForce(items []Item, capacity int64) (best float64, bestBytes int64, ok bool) {
	best = math.Inf(1)
	idx := make([]int, len(items))
	for {
		var e float64
		var b int64
		for i, j := range idx {
			e += items[i].Options[j].Err
			b += items[i].Options[j].Bytes
		}
		if b <= capacity && (e < best || (e == best && b < bestBytes)) {
			best, bestBytes, ok = e, b, true
		}
		i := 0
		for ; i < len(idx); i++ {
			idx[i]++
			if idx[i] < len(items[i].Options) {
				break
			}
			idx[i] = 0
		}
		if i == len(idx) {
			return
		}
	}
}

func TestSolveMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 300; trial++ {
		n := 1 + rng.IntN(5)
		items := make([]Item, n)
		var maxSum int64
		unit := int64(1 + rng.IntN(4)) // costs share a divisor sometimes
		for i := range items {
			k := 1 + rng.IntN(5)
			var hi int64
			for j := 0; j < k; j++ {
				o := Option{Rank: j + 1, Bytes: unit * int64(rng.IntN(9)), Err: float64(rng.IntN(50)) / 7}
				if trial%3 == 0 { // monotone curves, as measured ones are
					o.Bytes, o.Err = unit*int64(j+1)*int64(1+rng.IntN(3)), 10/float64(j+1)+rng.Float64()
				}
				hi = max(hi, o.Bytes)
				items[i].Options = append(items[i].Options, o)
			}
			items[i].Layer = i
			maxSum += hi
		}
		capacity := rng.Int64N(maxSum + 3)
		want, wantBytes, ok := bruteForce(items, capacity)
		choice, err := Solve(items, capacity)
		if !ok {
			if err == nil {
				t.Fatalf("trial %d: no plan fits %d bytes but Solve returned %v", trial, capacity, choice)
			}
			continue
		}
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		var e float64
		var b int64
		for i, j := range choice {
			e += items[i].Options[j].Err
			b += items[i].Options[j].Bytes
		}
		if b > capacity {
			t.Fatalf("trial %d: choice costs %d > capacity %d", trial, b, capacity)
		}
		if math.Abs(e-want) > 1e-9 {
			t.Fatalf("trial %d: error %v, brute force %v (bytes %d vs %d)", trial, e, want, b, wantBytes)
		}
	}
}

func TestSolveErrors(t *testing.T) {
	items := []Item{{Layer: 0, Side: K, Options: []Option{{Rank: 1, Bytes: 10, Err: 1}}}, {Layer: 0, Side: V, Options: []Option{{Rank: 1, Bytes: 10, Err: 1}}}}
	if _, err := Solve(items, 19); err == nil {
		t.Error("budget below the smallest plan accepted")
	}
	if _, err := Solve(nil, 10); err == nil {
		t.Error("no items accepted")
	}
	bad := []Item{{Options: []Option{{Rank: 1, Bytes: 1, Err: math.NaN()}}}}
	if _, err := Solve(bad, 10); err == nil {
		t.Error("NaN error accepted")
	}
	if _, err := Solve([]Item{{}}, 10); err == nil {
		t.Error("item without options accepted")
	}
}

// With equal convex curves on every item, the knapsack spreads the budget
// evenly.
func TestChooseEven(t *testing.T) {
	var curves []Curve
	for l := 0; l < 3; l++ {
		for _, s := range []Side{K, V} {
			c := Curve{Layer: l, Side: s}
			for r := 1; r <= 8; r++ {
				c.Ranks = append(c.Ranks, r)
				c.Bytes = append(c.Bytes, int64(2*r))
				c.Err = append(c.Err, 1/float64(r))
			}
			curves = append(curves, c)
		}
	}
	total, err := Choose(curves, 6*2*4)
	if err != nil {
		t.Fatal(err)
	}
	if total != 48 {
		t.Errorf("total bytes %d, want 48", total)
	}
	for _, c := range curves {
		if c.Rank != 4 {
			t.Errorf("layer %d %s: rank %d, want 4", c.Layer, c.Side, c.Rank)
		}
	}
}
