package linalg

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

func randMat(rng *rand.Rand, m, n int) []float64 {
	a := make([]float64, m*n) // (m, n)
	for i := range a {
		a[i] = rng.NormFloat64()
	}
	return a
}

// householder returns the exactly orthogonal symmetric (n, n) reflector
// I − 2·v·vᵀ/(vᵀ·v) for a random v: an orthogonal matrix built without any
// factorisation, so it can serve as an independent reference.
func householder(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	var vv float64
	for i := range v {
		v[i] = rng.NormFloat64()
		vv += v[i] * v[i]
	}
	h := make([]float64, n*n) // (n, n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			h[i*n+j] = -2 * v[i] * v[j] / vv
		}
		h[i*n+i]++
	}
	return h
}

// matmul returns A·B for A (m, k), B (k, n), by plain loops (independent of BLAS).
func matmul(a, b []float64, m, k, n int) []float64 {
	c := make([]float64, m*n) // (m, n)
	for i := 0; i < m; i++ {
		for p := 0; p < k; p++ {
			aip := a[i*k+p]
			for j := 0; j < n; j++ {
				c[i*n+j] += aip * b[p*n+j]
			}
		}
	}
	return c
}

func transpose(a []float64, m, n int) []float64 {
	t := make([]float64, m*n) // (n, m)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			t[j*m+i] = a[i*n+j]
		}
	}
	return t
}

func maxAbsDiff(a, b []float64) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

func checkOrthonormalCols(t *testing.T, name string, q []float64, m, k int, tol float64) {
	t.Helper()
	qtq := matmul(transpose(q, m, k), q, k, m, k)
	for i := 0; i < k; i++ {
		for j := 0; j < k; j++ {
			want := 0.0
			if i == j {
				want = 1
			}
			if d := math.Abs(qtq[i*k+j] - want); d > tol {
				t.Fatalf("%s: (QᵀQ)[%d,%d] = %g, want %g (backend %s)", name, i, j, qtq[i*k+j], want, LAPACKBackend())
			}
		}
	}
}

func TestSVDReconstructs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sh := range [][2]int{{60, 25}, {25, 60}, {40, 40}, {1, 7}, {7, 1}} {
		m, n := sh[0], sh[1]
		t.Run(fmt.Sprintf("%dx%d", m, n), func(t *testing.T) {
			a := randMat(rng, m, n)
			orig := append([]float64(nil), a...)
			u, s, vt, err := SVD(a, m, n)
			if err != nil {
				t.Fatal(err)
			}
			if maxAbsDiff(a, orig) != 0 {
				t.Fatal("SVD modified its input")
			}
			k := min(m, n)
			if len(u) != m*k || len(s) != k || len(vt) != k*n {
				t.Fatalf("shapes: len(u)=%d len(s)=%d len(vt)=%d, want %d %d %d", len(u), len(s), len(vt), m*k, k, k*n)
			}
			for i := range s {
				if s[i] < 0 || (i > 0 && s[i] > s[i-1]) {
					t.Fatalf("singular values not non-negative descending: %v", s)
				}
			}
			us := append([]float64(nil), u...)
			for i := 0; i < m; i++ {
				for j := 0; j < k; j++ {
					us[i*k+j] *= s[j]
				}
			}
			if d := maxAbsDiff(matmul(us, vt, m, k, n), a); d > 1e-10 {
				t.Fatalf("max |U·S·Vᵀ − A| = %g > 1e-10 (backend %s)", d, LAPACKBackend())
			}
			checkOrthonormalCols(t, "U", u, m, k, 1e-10)
			checkOrthonormalCols(t, "V", transpose(vt, k, n), n, k, 1e-10)
		})
	}
}

// TestSVDKnownValues builds A = H1·diag(s)·H2 from exact reflectors, so the
// singular values are known in advance; both backends must recover them.
func TestSVDKnownValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, sh := range [][2]int{{30, 12}, {12, 30}, {20, 20}} {
		m, n := sh[0], sh[1]
		k := min(m, n)
		want := make([]float64, k)
		for i := range want {
			want[i] = math.Pow(0.7, float64(i)) * 5
		}
		d := make([]float64, m*n) // (m, n)
		for i := 0; i < k; i++ {
			d[i*n+i] = want[i]
		}
		a := matmul(matmul(householder(rng, m), d, m, m, n), householder(rng, n), m, n, n)
		_, s, _, err := SVD(a, m, n)
		if err != nil {
			t.Fatal(err)
		}
		if diff := maxAbsDiff(s, want); diff > 1e-12 {
			t.Fatalf("%dx%d: singular values %v, want %v (max diff %g, backend %s)", m, n, s, want, diff, LAPACKBackend())
		}
	}
}

// TestSVDMatchesGonum compares the build's backend with gonum's mat.SVD
// directly (under the openblas tag this is LAPACKE vs pure Go in one run).
func TestSVDMatchesGonum(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	m, n := 50, 35
	a := randMat(rng, m, n)
	_, s, _, err := SVD(a, m, n)
	if err != nil {
		t.Fatal(err)
	}
	var ref mat.SVD
	if !ref.Factorize(mat.NewDense(m, n, append([]float64(nil), a...)), mat.SVDNone) {
		t.Fatal("gonum svd failed")
	}
	if d := maxAbsDiff(s, ref.Values(nil)); d > 1e-11 {
		t.Fatalf("singular values differ from gonum's by %g (backend %s)", d, LAPACKBackend())
	}
}

func TestSymEig(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	n := 24
	want := make([]float64, n)
	for i := range want {
		want[i] = float64(i) - 5.5 // ascending, some negative
	}
	h := householder(rng, n)
	d := make([]float64, n*n)
	for i := range want {
		d[i*n+i] = want[i]
	}
	a := matmul(matmul(h, d, n, n, n), h, n, n, n)
	vals, vecs, err := SymEig(a, n)
	if err != nil {
		t.Fatal(err)
	}
	if diff := maxAbsDiff(vals, want); diff > 1e-12 {
		t.Fatalf("eigenvalues %v, want %v (backend %s)", vals, want, LAPACKBackend())
	}
	checkOrthonormalCols(t, "Q", vecs, n, n, 1e-12)
	// A·q_j = λ_j·q_j for each column.
	aq := matmul(a, vecs, n, n, n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			if diff := math.Abs(aq[i*n+j] - vals[j]*vecs[i*n+j]); diff > 1e-11 {
				t.Fatalf("A·q[%d] differs from λ·q at row %d by %g", j, i, diff)
			}
		}
	}
}

func TestCholesky(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	n, rows := 20, 50
	x := randMat(rng, rows, n)
	a := matmul(transpose(x, rows, n), x, n, rows, n) // (n, n), positive definite
	l, err := Cholesky(a, n)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			if l[i*n+j] != 0 {
				t.Fatalf("L[%d,%d] = %g, want 0 (lower triangular)", i, j, l[i*n+j])
			}
		}
		if l[i*n+i] <= 0 {
			t.Fatalf("L[%d,%d] = %g, want > 0", i, i, l[i*n+i])
		}
	}
	if d := maxAbsDiff(matmul(l, transpose(l, n, n), n, n, n), a); d > 1e-10 {
		t.Fatalf("max |L·Lᵀ − A| = %g (backend %s)", d, LAPACKBackend())
	}

	// Not positive definite: a rank-deficient Gram with a negative shift.
	bad := append([]float64(nil), a...)
	for i := 0; i < n; i++ {
		bad[i*n+i] -= 1e6
	}
	if _, err := Cholesky(bad, n); !errors.Is(err, ErrNotPositiveDefinite) {
		t.Fatalf("Cholesky of an indefinite matrix: err = %v, want ErrNotPositiveDefinite", err)
	}
}

func TestLinalgBadInput(t *testing.T) {
	if _, _, _, err := SVD(make([]float64, 5), 2, 3); err == nil {
		t.Fatal("SVD accepted 5 elements for 2×3")
	}
	if _, _, _, err := SVD(nil, 0, 3); err == nil {
		t.Fatal("SVD accepted a 0×3 matrix")
	}
	if _, _, _, err := SVD([]float64{1, math.NaN()}, 1, 2); err == nil {
		t.Fatal("SVD accepted NaN")
	}
	if _, _, err := SymEig(make([]float64, 3), 2); err == nil {
		t.Fatal("SymEig accepted 3 elements for 2×2")
	}
	if _, err := Cholesky([]float64{1, 0, 0, math.Inf(1)}, 2); err == nil {
		t.Fatal("Cholesky accepted Inf")
	}
}

// BenchmarkSVD times thin SVDs of random square matrices:
// go test -run '^$' -bench SVD -benchtime 1x ./linalg [-tags openblas]
func BenchmarkSVD(b *testing.B) {
	for _, n := range []int{1024, 2048} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			a := randMat(rand.New(rand.NewPCG(11, uint64(n))), n, n)
			b.ResetTimer()
			for range b.N {
				if _, _, _, err := SVD(a, n, n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
