package linalg

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpShift holds ExpShift (vectorised in the cgo build) to the Go
// version bit for bit, and the Go version to math.Exp (3e-7 relative).
func TestExpShift(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 63, 64, 65, 1000, 4099} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * 30)
		}
		x[0] = float32(math.NaN())
		if n > 3 {
			x[1], x[2], x[3] = -1000, 1000, 0
		}
		a, b := append([]float32(nil), x...), append([]float32(nil), x...)
		m := float32(1.5)
		sa, sb := ExpShift(a, m), expShiftGo(b, m)
		if math.Float32bits(sa) != math.Float32bits(sb) && !(sa != sa && sb != sb) {
			t.Errorf("n=%d: sum %g, Go %g", n, sa, sb)
		}
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) {
				t.Fatalf("n=%d: exp(%g − %g) = %g, Go %g", n, x[i], m, a[i], b[i])
			}
			v := float64(x[i]) - float64(m)
			if v > -87 && v < 88 {
				if e := math.Exp(float64(float32(v))); math.Abs(float64(b[i])-e)/e > 3e-7 {
					t.Errorf("exp(%g) = %g, want %g", v, b[i], e)
				}
			}
		}
	}
}

func BenchmarkExpShift(b *testing.B) {
	x := make([]float32, 2048)
	for _, f := range []struct {
		name string
		f    func([]float32, float32) float32
	}{{"ExpShift", ExpShift}, {"Go", expShiftGo}} {
		b.Run(f.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				for j := range x {
					x[j] = float32(j%97) / -10
				}
				f.f(x, 0)
			}
			b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds()/1e6, "Mexp/s")
		})
	}
}

// TestSoftmax2 holds Softmax2, Softmax2Lanes and ScaleDiff (vectorised in
// the cgo build) to their Go versions bit for bit, over lengths around the vector
// threshold and widths, empty parts, ±1000 and NaN, and checks that a
// softmax sums to 1.
func TestSoftmax2(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	same := func(x, y float32) bool {
		return math.Float32bits(x) == math.Float32bits(y) || (x != x && y != y)
	}
	for _, n := range [][2]int{{0, 1}, {1, 0}, {5, 3}, {40, 30}, {63, 0}, {64, 0}, {0, 64}, {100, 17}, {1000, 33}, {200, 190}, {4099, 0}} {
		a := make([]float32, n[0]+n[1])
		for i := range a {
			a[i] = float32(r.NormFloat64() * 20)
		}
		if len(a) > 3 {
			a[1], a[2] = -1000, 1000
		}
		if len(a) > 130 { // the largest value in a later lane of the maxima
			a[len(a)-70] = 1500
		}
		for _, nan := range []bool{false, true} {
			if nan && len(a) > 4 {
				a[4] = float32(math.NaN())
			}
			for _, f := range []struct {
				name       string
				fast, slow func(a, b []float32)
			}{{"Softmax2", Softmax2, softmax2Go},
				{"Softmax2Lanes", func(a, b []float32) { Softmax2Lanes(a, b) }, func(a, b []float32) { softmax2LanesGo(a, b) }}} {
				x, y := append([]float32(nil), a...), append([]float32(nil), a...)
				f.fast(x[:n[0]], x[n[0]:])
				f.slow(y[:n[0]], y[n[0]:])
				var sum float64
				for i := range x {
					if !same(x[i], y[i]) {
						t.Fatalf("%s, parts %v, NaN %v: element %d = %g, Go %g", f.name, n, nan, i, x[i], y[i])
					}
					sum += float64(x[i])
				}
				if !nan && math.Abs(sum-1) > 1e-5 {
					t.Errorf("%s, parts %v: softmax sums to %g", f.name, n, sum)
				}
			}
		}
		// ExpScale recomputes Softmax2Lanes's rows from its shift and 1/Σ.
		x, y := append([]float32(nil), a...), append([]float32(nil), a...)
		m, inv := Softmax2Lanes(x[:n[0]], x[n[0]:])
		ExpScale(y[:n[0]], m, inv)
		ExpScale(y[n[0]:], m, inv)
		for i := range x {
			if !same(x[i], y[i]) {
				t.Fatalf("ExpScale, parts %v: element %d = %g, softmax %g", n, i, y[i], x[i])
			}
		}
		z := append([]float32(nil), a...)
		expScaleGo(z, m, inv)
		for i := range z {
			if !same(z[i], y[i]) {
				t.Fatalf("ExpScale, n=%d: element %d = %g, Go %g", len(a), i, y[i], z[i])
			}
		}
		p := make([]float32, len(a))
		for i := range p {
			p[i] = float32(r.Float64())
		}
		x, y = append([]float32(nil), a...), append([]float32(nil), a...)
		ScaleDiff(x, p, 0.3)
		scaleDiffGo(y, p, 0.3)
		for i := range x {
			if !same(x[i], y[i]) {
				t.Fatalf("ScaleDiff, n=%d: element %d = %g, Go %g", len(a), i, x[i], y[i])
			}
		}
	}
}

// TestSiLUGate holds SiLUGate (vectorised in the cgo build) to its Go
// version bit for bit, and both to x/(1 + e^−x)·u in float64 (1e-6
// relative: a few float32 ulps), over lengths around the vector threshold,
// ±1000, 0 and NaN.
func TestSiLUGate(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{1, 63, 64, 65, 1000, 4099} {
		g, u := make([]float32, n), make([]float32, n)
		for i := range g {
			g[i], u[i] = float32(r.NormFloat64()*8), float32(r.NormFloat64())
		}
		if n > 4 {
			g[1], g[2], g[3], g[4] = -1000, 1000, 0, float32(math.NaN())
		}
		a, b := append([]float32(nil), g...), append([]float32(nil), g...)
		SiLUGate(a, u)
		siluGateGo(b, u)
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) {
				t.Fatalf("n=%d: SiLUGate(%g)·%g = %g, Go %g", n, g[i], u[i], a[i], b[i])
			}
			if g[i] != g[i] {
				if a[i] == a[i] {
					t.Errorf("SiLUGate(NaN) = %g", a[i])
				}
				continue
			}
			x := float64(g[i])
			want := x / (1 + math.Exp(-x)) * float64(u[i])
			if math.IsInf(float64(a[i]), 0) || math.Abs(float64(a[i])-want) > 1e-6*math.Abs(want)+1e-30 {
				t.Errorf("SiLUGate(%g)·%g = %g, want %g", g[i], u[i], a[i], want)
			}
		}
	}
}
