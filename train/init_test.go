package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/cskv/cskv/linalg"
)

// product returns B·A (kvDim, hidden) in float64 by plain loops.
func product(A, B []float32, hidden, kvDim, rank int) []float64 {
	out := make([]float64, kvDim*hidden) // (kvDim, hidden)
	for j := 0; j < kvDim; j++ {
		for i := 0; i < rank; i++ {
			bji := float64(B[j*rank+i])
			for c := 0; c < hidden; c++ {
				out[j*hidden+c] += bji * float64(A[i*hidden+c])
			}
		}
	}
	return out
}

// relDiff is ‖got − want‖_F / ‖want‖_F.
func relDiff(got, want []float64) float64 {
	var num, den float64
	for i := range want {
		d := got[i] - want[i]
		num += d * d
		den += want[i] * want[i]
	}
	return math.Sqrt(num / den)
}

func to64(a []float32) []float64 {
	out := make([]float64, len(a))
	for i, v := range a {
		out[i] = float64(v)
	}
	return out
}

// randOrthonormal returns a (rows, cols) matrix with orthonormal columns, from
// gonum's QR of a Gaussian matrix (independent of the SVD under test).
func randOrthonormal(rng *rand.Rand, rows, cols int) *mat.Dense {
	g := mat.NewDense(rows, cols, nil)
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			g.Set(i, j, rng.NormFloat64())
		}
	}
	var qr mat.QR
	qr.Factorize(g)
	var q mat.Dense
	qr.QTo(&q) // (rows, rows)
	return mat.DenseCopyOf(q.Slice(0, rows, 0, cols))
}

// decayingWeight returns W (kvDim, hidden) = V·diag(sv)·Uᵀ with orthonormal
// U (hidden, kvDim), V (kvDim, kvDim) and sv_i = 3·0.8^i, so Wk = Wᵀ = U·S·Vᵀ.
func decayingWeight(rng *rand.Rand, kvDim, hidden int) (W []float32, U, V *mat.Dense, sv []float64) {
	U = randOrthonormal(rng, hidden, kvDim)
	V = randOrthonormal(rng, kvDim, kvDim)
	sv = make([]float64, kvDim)
	for i := range sv {
		sv[i] = 3 * math.Pow(0.8, float64(i))
	}
	var us, wm mat.Dense
	us.Mul(U, mat.NewDiagDense(kvDim, sv))
	wm.Mul(&us, V.T()) // (hidden, kvDim)
	W = make([]float32, kvDim*hidden)
	for j := 0; j < kvDim; j++ {
		for c := 0; c < hidden; c++ {
			W[j*hidden+c] = float32(wm.At(c, j))
		}
	}
	return W, U, V, sv
}

// anisotropicX returns X (n, hidden) = Z·M with Gaussian Z and a random M
// whose rows decay in scale, so channels are correlated and of unequal size.
func anisotropicX(rng *rand.Rand, n, hidden int) []float32 {
	m := make([]float64, hidden*hidden) // (hidden, hidden)
	for i := 0; i < hidden; i++ {
		sc := math.Pow(0.9, float64(i))
		for j := 0; j < hidden; j++ {
			m[i*hidden+j] = sc * rng.NormFloat64()
		}
	}
	x := make([]float32, n*hidden) // (n, hidden)
	z := make([]float64, hidden)
	for t := 0; t < n; t++ {
		for i := range z {
			z[i] = rng.NormFloat64()
		}
		for j := 0; j < hidden; j++ {
			var v float64
			for i := 0; i < hidden; i++ {
				v += z[i] * m[i*hidden+j]
			}
			x[t*hidden+j] = float32(v)
		}
	}
	return x
}

func statsOf(t *testing.T, x []float32, hidden int) *Stats {
	t.Helper()
	s, err := NewStats(hidden, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add(x); err != nil {
		t.Fatal(err)
	}
	return s
}

// optimalLoss is the Eckart–Young floor of the KV loss at rank r, computed
// independently of the inits: the tail energy of the singular values of
// K = X·Wᵀ (n, kvDim), divided by n·kvDim. The truncated SVD of K lies in the
// column space of X, so it is reachable as X·Aᵀ·Bᵀ.
func optimalLoss(t *testing.T, x, W []float32, n, hidden, kvDim, rank int) float64 {
	t.Helper()
	k := make([]float64, n*kvDim) // (n, kvDim)
	for r := 0; r < n; r++ {
		for j := 0; j < kvDim; j++ {
			var v float64
			for c := 0; c < hidden; c++ {
				v += float64(x[r*hidden+c]) * float64(W[j*hidden+c])
			}
			k[r*kvDim+j] = v
		}
	}
	var svd mat.SVD
	if !svd.Factorize(mat.NewDense(n, kvDim, k), mat.SVDNone) {
		t.Fatal("reference svd failed")
	}
	var tail float64
	for i, s := range svd.Values(nil) {
		if i >= rank {
			tail += s * s
		}
	}
	return tail / float64(n*kvDim)
}

func TestRankFromDensity(t *testing.T) {
	for _, c := range []struct {
		d      float64
		hd, nh int
		want   int
	}{
		{0.25, 64, 4, 64},
		{0.5, 8, 4, 16},
		{0.2, 8, 4, 4},    // int(1.6) = 1 per head
		{0.999, 8, 2, 14}, // int(7.992) = 7 per head
	} {
		got, err := RankFromDensity(c.d, c.hd, c.nh)
		if err != nil || got != c.want {
			t.Errorf("RankFromDensity(%v, %d, %d) = %d, %v; want %d", c.d, c.hd, c.nh, got, err, c.want)
		}
	}
	for _, c := range []struct {
		d      float64
		hd, nh int
		msg    string
	}{
		{0, 64, 4, "density 0 "},
		{1, 64, 4, "density 1 "},
		{-0.1, 64, 4, "density -0.1"},
		{1.5, 64, 4, "density 1.5"},
		{math.NaN(), 64, 4, "density NaN"},
		{0.1, 8, 2, "keeps 0 channels"},
		{0.5, 0, 2, "head_dim 0"},
		{0.5, 8, 0, "n_kv_heads 0"},
	} {
		_, err := RankFromDensity(c.d, c.hd, c.nh)
		if err == nil || !strings.Contains(err.Error()+" ", c.msg) {
			t.Errorf("RankFromDensity(%v, %d, %d): err = %v; want one mentioning %q", c.d, c.hd, c.nh, err, c.msg)
		}
	}
}

// At full rank every init must reproduce W exactly (B·A = W).
func TestInitsFullRank(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	kv, hidden, n := 16, 24, 100
	W := make([]float32, kv*hidden)
	for i := range W {
		W[i] = float32(rng.NormFloat64())
	}
	x := anisotropicX(rng, n, hidden)
	st := statsOf(t, x, hidden)
	want := to64(W)

	A, B, err := InitSVD(W, kv, hidden, kv)
	if err != nil {
		t.Fatal(err)
	}
	if d := relDiff(product(A, B, hidden, kv, kv), want); d > 1e-5 {
		t.Errorf("svd: ‖B·A − W‖/‖W‖ = %g > 1e-5", d)
	}
	A, B, err = InitASVD(W, kv, hidden, kv, st.MeanAbs(), 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if d := relDiff(product(A, B, hidden, kv, kv), want); d > 1e-5 {
		t.Errorf("asvd: ‖B·A − W‖/‖W‖ = %g > 1e-5", d)
	}
	A, B, ridge, err := InitWhiten(W, kv, hidden, kv, st.Gram, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := relDiff(product(A, B, hidden, kv, kv), want); d > 1e-5 {
		t.Errorf("whitened: ‖B·A − W‖/‖W‖ = %g > 1e-5 (ridge %g)", d, ridge)
	}
	if len(A) != kv*hidden || len(B) != kv*kv {
		t.Errorf("shapes: len(A) = %d, len(B) = %d", len(A), len(B))
	}
}

// InitSVD against a matrix whose SVD is known by construction.
func TestInitSVDKnownDecomposition(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	kv, hidden := 12, 20
	W, U, V, sv := decayingWeight(rng, kv, hidden)
	for _, r := range []int{1, 3, 6, 11} {
		A, B, err := InitSVD(W, kv, hidden, r)
		if err != nil {
			t.Fatal(err)
		}
		// Reference: (U_r·S_r·V_rᵀ)ᵀ = V_r·S_r·U_rᵀ (kv, hidden).
		var vs, ref mat.Dense
		vs.Mul(V.Slice(0, kv, 0, r), mat.NewDiagDense(r, sv[:r]))
		ref.Mul(&vs, U.Slice(0, hidden, 0, r).T()) // (kv, hidden)
		if d := relDiff(product(A, B, hidden, kv, r), ref.RawMatrix().Data); d > 1e-5 {
			t.Errorf("rank %d: ‖B·A − U_r·S_r·V_rᵀ‖/‖·‖ = %g > 1e-5", r, d)
		}
		// Balanced split: A·Aᵀ = S_r and Bᵀ·B = S_r.
		for i := 0; i < r; i++ {
			for j := 0; j < r; j++ {
				var aa, bb float64
				for c := 0; c < hidden; c++ {
					aa += float64(A[i*hidden+c]) * float64(A[j*hidden+c])
				}
				for c := 0; c < kv; c++ {
					bb += float64(B[c*r+i]) * float64(B[c*r+j])
				}
				want := 0.0
				if i == j {
					want = sv[i]
				}
				if math.Abs(aa-want) > 1e-5 || math.Abs(bb-want) > 1e-5 {
					t.Fatalf("rank %d: (A·Aᵀ)[%d,%d] = %g, (Bᵀ·B)[%d,%d] = %g, want %g", r, i, j, aa, i, j, bb, want)
				}
			}
		}
	}
}

// With a constant mean |x| the ASVD scaling is a multiple of the identity,
// so its product must equal the plain SVD's.
func TestASVDConstantMeanAbsIsSVD(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	kv, hidden, r := 16, 32, 5
	W, _, _, _ := decayingWeight(rng, kv, hidden)
	meanAbs := make([]float64, hidden)
	for i := range meanAbs {
		meanAbs[i] = 0.37
	}
	As, Bs, err := InitSVD(W, kv, hidden, r)
	if err != nil {
		t.Fatal(err)
	}
	Aa, Ba, err := InitASVD(W, kv, hidden, r, meanAbs, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if d := relDiff(product(Aa, Ba, hidden, kv, r), product(As, Bs, hidden, kv, r)); d > 1e-5 {
		t.Fatalf("ASVD with constant mean |x| differs from SVD: relative %g > 1e-5", d)
	}
	// A non-constant mean |x| must change the result (the test can fail).
	meanAbs[0] = 50
	Aa, Ba, err = InitASVD(W, kv, hidden, r, meanAbs, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if d := relDiff(product(Aa, Ba, hidden, kv, r), product(As, Bs, hidden, kv, r)); d < 1e-3 {
		t.Fatalf("ASVD ignores mean |x|: relative difference only %g", d)
	}
}

// The whitened init is the optimum of the KV loss: ≤ SVD and ASVD at every
// rank, and equal to the independent Eckart–Young floor of X·Wᵀ.
func TestWhitenBeatsSVDAndASVD(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	kv, hidden, n := 32, 48, 400
	W, _, _, _ := decayingWeight(rng, kv, hidden)
	x := anisotropicX(rng, n, hidden)
	st := statsOf(t, x, hidden)
	for _, r := range []int{kv / 2, kv / 4, kv / 8} {
		loss := func(name string, A, B []float32) float64 {
			l, err := KVLossGram(st.Gram, st.N, W, A, B, hidden, kv, r)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			ld, err := KVLoss(x, W, A, B, hidden, kv, r)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if math.Abs(l-ld) > 1e-9*ld {
				t.Fatalf("rank %d %s: KVLossGram %g vs KVLoss %g", r, name, l, ld)
			}
			return l
		}
		A, B, err := InitSVD(W, kv, hidden, r)
		if err != nil {
			t.Fatal(err)
		}
		lSVD := loss("svd", A, B)
		A, B, err = InitASVD(W, kv, hidden, r, st.MeanAbs(), 0.5)
		if err != nil {
			t.Fatal(err)
		}
		lASVD := loss("asvd", A, B)
		A, B, ridge, err := InitWhiten(W, kv, hidden, r, st.Gram, 0)
		if err != nil {
			t.Fatal(err)
		}
		lW := loss("whitened", A, B)
		opt := optimalLoss(t, x, W, n, hidden, kv, r)
		t.Logf("rank %2d: KV MSE svd %.6g, asvd %.6g, whitened %.6g (ridge %.3g), Eckart–Young floor %.6g", r, lSVD, lASVD, lW, ridge, opt)
		if lW > lSVD || lW > lASVD {
			t.Errorf("rank %d: whitened loss %g exceeds svd %g or asvd %g", r, lW, lSVD, lASVD)
		}
		if math.Abs(lW-opt) > 1e-5*opt {
			t.Errorf("rank %d: whitened loss %g differs from the optimum %g (relative %g > 1e-5)", r, lW, opt, math.Abs(lW-opt)/opt)
		}
	}
}

// Rank-deficient XᵀX: fewer rows than channels, duplicated and dead channels.
func TestWhitenRankDeficient(t *testing.T) {
	kv, hidden, r := 16, 40, 6
	cases := map[string]func(rng *rand.Rand) []float32{
		"few rows": func(rng *rand.Rand) []float32 { return anisotropicX(rng, 25, hidden) },
		"duplicated and dead channels": func(rng *rand.Rand) []float32 {
			x := anisotropicX(rng, 200, hidden)
			for t := 0; t < 200; t++ {
				x[t*hidden+5] = x[t*hidden+3]
				x[t*hidden+7] = x[t*hidden+3]
				x[t*hidden+9] = 0
			}
			return x
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 5))
			W, _, _, _ := decayingWeight(rng, kv, hidden)
			x := mk(rng)
			n := len(x) / hidden
			st := statsOf(t, x, hidden)
			A, B, ridge, err := InitWhiten(W, kv, hidden, r, st.Gram, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !(ridge > 0) {
				t.Fatalf("ridge used %g, want > 0", ridge)
			}
			for i, v := range append(append([]float32(nil), A...), B...) {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("factor element %d is %v", i, v)
				}
			}
			l, err := KVLoss(x, W, A, B, hidden, kv, r)
			if err != nil {
				t.Fatal(err)
			}
			As, Bs, err := InitSVD(W, kv, hidden, r)
			if err != nil {
				t.Fatal(err)
			}
			lSVD, err := KVLoss(x, W, As, Bs, hidden, kv, r)
			if err != nil {
				t.Fatal(err)
			}
			opt := optimalLoss(t, x, W, n, hidden, kv, r)
			t.Logf("ridge %.3g: whitened %.6g, svd %.6g, floor %.6g", ridge, l, lSVD, opt)
			if l > lSVD || math.Abs(l-opt) > 1e-3*opt {
				t.Fatalf("whitened loss %g: want ≤ svd %g and within 1e-3 of the floor %g", l, lSVD, opt)
			}
		})
	}
}

// An indefinite "Gram" forces the ×10 ridge loop; a given ridge is used as is.
func TestWhitenRidgeEscalation(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	kv, hidden, r := 8, 12, 3
	W, _, _, _ := decayingWeight(rng, kv, hidden)
	gram := make([]float64, hidden*hidden)
	for i := 0; i < hidden; i++ {
		gram[i*hidden+i] = 1
	}
	gram[0] = -1e-3 // one eigenvalue −1e-3: needs λ > 1e-3
	_, _, ridge, err := InitWhiten(W, kv, hidden, r, gram, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := defaultRelRidge * (float64(hidden-1) - 1e-3) / float64(hidden)
	want := start * 1e4 // first power of ten above 1e-3
	if math.Abs(ridge-want) > 1e-12 {
		t.Fatalf("ridge used %g, want %g (start %g ×10⁴)", ridge, want, start)
	}
	for i := 0; i < hidden; i++ {
		gram[i*hidden+i] = 1
	}
	_, _, ridge, err = InitWhiten(W, kv, hidden, r, gram, 0.5)
	if err != nil || ridge != 0.5 {
		t.Fatalf("given ridge 0.5: used %g, err %v", ridge, err)
	}
	gram[3] = math.NaN()
	if _, _, _, err := InitWhiten(W, kv, hidden, r, gram, 0); err == nil {
		t.Fatal("InitWhiten accepted a NaN Gram matrix")
	}
}

func TestInitValidation(t *testing.T) {
	kv, hidden := 4, 6
	W := make([]float32, kv*hidden)
	for i := range W {
		W[i] = float32(i%5) - 2
	}
	meanAbs := make([]float64, hidden)
	gram := make([]float64, hidden*hidden)
	for i := 0; i < hidden; i++ {
		gram[i*hidden+i] = 1
	}
	nanW := append([]float32(nil), W...)
	nanW[7] = float32(math.NaN())
	badMean := append([]float64(nil), meanAbs...)
	badMean[2] = -1
	inits := map[string]func(W []float32, kv, hidden, rank int) error{
		"svd": func(W []float32, kv, hidden, rank int) error {
			_, _, err := InitSVD(W, kv, hidden, rank)
			return err
		},
		"asvd": func(W []float32, kv, hidden, rank int) error {
			_, _, err := InitASVD(W, kv, hidden, rank, meanAbs, 0.5)
			return err
		},
		"whitened": func(W []float32, kv, hidden, rank int) error {
			_, _, _, err := InitWhiten(W, kv, hidden, rank, gram, 0)
			return err
		},
	}
	for name, f := range inits {
		if err := f(W, kv, hidden, 2); err != nil {
			t.Errorf("%s: valid call failed: %v", name, err)
		}
		for _, c := range []struct {
			W              []float32
			kv, hidden, rk int
			msg            string
		}{
			{W, kv, hidden, 0, "rank 0"},
			{W, kv, hidden, 5, "rank 5"},
			{W[:10], kv, hidden, 2, "10 elements"},
			{W, 0, hidden, 1, "kv_dim 0"},
			{nanW, kv, hidden, 2, "(1, 1) is NaN"},
		} {
			err := f(c.W, c.kv, c.hidden, c.rk)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("%s %s: err = %v; want one mentioning %q", name, c.msg, err, c.msg)
			}
		}
	}
	if _, _, err := InitASVD(W, kv, hidden, 2, meanAbs[:3], 0.5); err == nil {
		t.Error("asvd accepted 3 mean |x| values for hidden 6")
	}
	if _, _, err := InitASVD(W, kv, hidden, 2, badMean, 0.5); err == nil || !strings.Contains(err.Error(), "channel 2") {
		t.Errorf("asvd with negative mean |x|: err = %v", err)
	}
	if _, _, _, err := InitWhiten(W, kv, hidden, 2, gram[:5], 0); err == nil {
		t.Error("whitened accepted a 5-element Gram matrix")
	}
}

// BenchmarkInitWhiten times a whitened init at a 7B-like shape
// (hidden 4096, kv_dim 1024, rank 256); use -benchtime 1x.
func BenchmarkInitWhiten(b *testing.B) {
	for _, sh := range [][2]int{{1024, 256}, {4096, 1024}} {
		hidden, kv := sh[0], sh[1]
		b.Run(fmt.Sprintf("hidden%d_kv%d", hidden, kv), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(7, 7))
			W := make([]float32, kv*hidden)
			for i := range W {
				W[i] = float32(rng.NormFloat64())
			}
			x := make([]float32, 512*hidden)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			st, _ := NewStats(hidden, true)
			if err := st.Add(x); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if _, _, _, err := InitWhiten(W, kv, hidden, kv/4, st.Gram, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.Logf("backend %s", linalg.LAPACKBackend())
		})
	}
}
