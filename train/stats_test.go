package train

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestStatsAdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	hidden, n := 7, 3*statsChunkRows+13 // several chunks plus a partial one
	x := make([]float32, n*hidden)
	for i := range x {
		x[i] = float32(rng.NormFloat64()) + float32(i%hidden) // channel-dependent mean
	}
	s, err := NewStats(hidden, true)
	if err != nil {
		t.Fatal(err)
	}
	// Add in uneven pieces, including an empty one.
	for _, cut := range [][2]int{{0, 1}, {1, 1}, {1, 300}, {300, n}} {
		if err := s.Add(x[cut[0]*hidden : cut[1]*hidden]); err != nil {
			t.Fatal(err)
		}
	}
	if s.N != int64(n) {
		t.Fatalf("N = %d, want %d", s.N, n)
	}
	// Naive float64 references.
	mean := s.MeanAbs()
	for c := 0; c < hidden; c++ {
		var sa float64
		for r := 0; r < n; r++ {
			sa += math.Abs(float64(x[r*hidden+c]))
		}
		if math.Abs(mean[c]-sa/float64(n)) > 1e-12*sa {
			t.Fatalf("MeanAbs[%d] = %g, want %g", c, mean[c], sa/float64(n))
		}
		for d := 0; d < hidden; d++ {
			var g float64
			for r := 0; r < n; r++ {
				g += float64(x[r*hidden+c]) * float64(x[r*hidden+d])
			}
			if math.Abs(s.Gram[c*hidden+d]-g) > 1e-10*math.Abs(g)+1e-9 {
				t.Fatalf("Gram[%d,%d] = %g, want %g", c, d, s.Gram[c*hidden+d], g)
			}
		}
	}

	// Merge of two halves equals the whole.
	a, _ := NewStats(hidden, true)
	b, _ := NewStats(hidden, true)
	if err := a.Add(x[:100*hidden]); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(x[100*hidden:]); err != nil {
		t.Fatal(err)
	}
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	if a.N != s.N || relDiff(a.Gram, s.Gram) > 1e-12 || relDiff(a.SumAbs, s.SumAbs) > 1e-12 {
		t.Fatalf("merged stats differ: N %d vs %d", a.N, s.N)
	}
	noGram, _ := NewStats(hidden, false)
	if err := a.Merge(noGram); err == nil {
		t.Fatal("Merge accepted statistics without Gram into statistics with Gram")
	}
}

func TestStatsErrors(t *testing.T) {
	if _, err := NewStats(0, true); err == nil {
		t.Fatal("NewStats accepted hidden 0")
	}
	s, _ := NewStats(3, false)
	if s.Gram != nil {
		t.Fatal("Gram allocated although not requested")
	}
	if m := s.MeanAbs(); len(m) != 3 || m[0] != 0 {
		t.Fatalf("MeanAbs before data = %v, want zeros", m)
	}
	if err := s.Add(make([]float32, 4)); err == nil || !strings.Contains(err.Error(), "multiple of hidden 3") {
		t.Fatalf("Add of 4 values at hidden 3: err = %v", err)
	}
	if err := s.Add([]float32{1, 2, 3, 4, float32(math.Inf(1)), 6}); err == nil || !strings.Contains(err.Error(), "row 1 channel 1") {
		t.Fatalf("Add with Inf: err = %v", err)
	}
	if s.N != 0 || s.SumAbs[0] != 0 {
		t.Fatal("a failed Add changed the statistics")
	}
	if err := s.Add([]float32{-1, 2, -3}); err != nil || s.MeanAbs()[2] != 3 {
		t.Fatalf("Add without Gram: err %v, mean %v", err, s.MeanAbs())
	}
}

func TestKVLoss(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	hidden, kv, r, n := 10, 6, 2, 300
	rnd := func(k int) []float32 {
		v := make([]float32, k)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	x, W, A, B := rnd(n*hidden), rnd(kv*hidden), rnd(r*hidden), rnd(kv*r)
	// Naive reference: K = X·Wᵀ, K̂ = (X·Aᵀ)·Bᵀ, both in float64.
	var sum, sumK float64
	for t0 := 0; t0 < n; t0++ {
		c := make([]float64, r)
		for i := 0; i < r; i++ {
			for h := 0; h < hidden; h++ {
				c[i] += float64(x[t0*hidden+h]) * float64(A[i*hidden+h])
			}
		}
		for j := 0; j < kv; j++ {
			var k, kh float64
			for h := 0; h < hidden; h++ {
				k += float64(x[t0*hidden+h]) * float64(W[j*hidden+h])
			}
			for i := 0; i < r; i++ {
				kh += c[i] * float64(B[j*r+i])
			}
			sum += (k - kh) * (k - kh)
			sumK += k * k
		}
	}
	want := sum / float64(n*kv)
	wantK := sumK / float64(n*kv)
	got, err := KVLoss(x, W, A, B, hidden, kv, r)
	if err != nil || math.Abs(got-want) > 1e-10*want {
		t.Fatalf("KVLoss = %g, %v; want %g", got, err, want)
	}
	s := statsOf(t, x, hidden)
	got, err = KVLossGram(s.Gram, s.N, W, A, B, hidden, kv, r)
	if err != nil || math.Abs(got-want) > 1e-10*want {
		t.Fatalf("KVLossGram = %g, %v; want %g", got, err, want)
	}
	gotK, err := KVLossGram(s.Gram, s.N, W, nil, nil, hidden, kv, r)
	if err != nil || math.Abs(gotK-wantK) > 1e-10*wantK {
		t.Fatalf("KVLossGram without factors = %g, %v; want mean square of K %g", gotK, err, wantK)
	}
	if _, err := KVLoss(x, W, A[:5], B, hidden, kv, r); err == nil {
		t.Fatal("KVLoss accepted a short A")
	}
	if _, err := KVLossGram(s.Gram, 0, W, A, B, hidden, kv, r); err == nil {
		t.Fatal("KVLossGram accepted n = 0")
	}
}

// BenchmarkStatsAdd: 1024 tokens at hidden 4096 (Gram via Dsyrk); -benchtime 1x.
func BenchmarkStatsAdd(b *testing.B) {
	hidden, n := 4096, 1024
	x := make([]float32, n*hidden)
	rng := rand.New(rand.NewPCG(10, 10))
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	s, _ := NewStats(hidden, true)
	b.ResetTimer()
	for range b.N {
		if err := s.Add(x); err != nil {
			b.Fatal(err)
		}
	}
}
