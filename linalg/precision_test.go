package linalg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// toBF16 rounds v to the nearest bfloat16 (ties to even), as oneDNN does.
func toBF16(v float32) float64 {
	u := math.Float32bits(v)
	u += 0x7fff + (u>>16)&1
	return float64(math.Float32frombits(u &^ 0xffff))
}

// refGemm is alpha·op(A)·op(B) + beta·C in float64 with each operand first
// passed through round, and Σ|a·b| per element (the scale of the rounding
// error of any summation order).
func refGemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, round func(float32) float64) (ref, scale []float64) {
	ref, scale = make([]float64, m*n), make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, abs float64
			for p := 0; p < k; p++ {
				ia, ib := i*lda+p, p*ldb+j
				if tA {
					ia = p*lda + i
				}
				if tB {
					ib = j*ldb + p
				}
				ai, bj := a[ia], b[ib]
				x := round(ai) * round(bj)
				s += x
				abs += math.Abs(x)
			}
			ref[i*n+j] = float64(alpha)*s + float64(beta)*float64(c[i*ldc+j])
			scale[i*n+j] = math.Abs(float64(alpha))*abs + math.Abs(float64(beta)*float64(c[i*ldc+j]))
		}
	}
	return ref, scale
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// TestProducts holds every product path (BLAS, oneDNN f32, oneDNN bf16) to
// a float64 reference, over transposes, leading dimensions wider than the
// rows, alpha and beta, and Gemm32 in each Precision. Tolerances, relative
// to Σ|a·b| of each element: float32 1e-5 (k·eps for k ≤ 300 with room);
// bf16 1e-5 against the reference of the bf16-rounded operands (so only
// float32 accumulation error is allowed) and 2⁻⁷ against the exact operands
// (two bf16 roundings of 2⁻⁹ each, with room).
func TestProducts(t *testing.T) {
	defer SetPrecision(CurrentPrecision())
	exact32 := func(v float32) float64 { return float64(v) }
	type gemmFunc func(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool
	type path struct {
		name      string
		prec      Precision
		gemm      gemmFunc
		round     func(float32) float64
		tol, tolX float64 // against the rounded operands, against the exact ones
	}
	blasGemm := func(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
		impl.Sgemm(trans(tA), trans(tB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return true
	}
	viaGemm32 := func(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
		Gemm32(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return true
	}
	viaSerial := func(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
		Gemm32Serial(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return true
	}
	dnnlAt := func(bf16 bool) gemmFunc {
		return func(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
			return dnnlGemm(bf16, false, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		}
	}
	paths := []path{{"blas-f32", F32, blasGemm, exact32, 1e-5, 1e-5}, {"Gemm32-f32", F32, viaGemm32, exact32, 1e-5, 1e-5},
		{"Gemm32Serial-f32", F32, viaSerial, exact32, 1e-5, 1e-5}}
	if HasBF16() {
		paths = append(paths,
			path{"dnnl-f32", F32, dnnlAt(false), exact32, 1e-5, 1e-5},
			path{"dnnl-bf16", F32, dnnlAt(true), toBF16, 1e-5, 1.0 / 128},
			path{"Gemm32-bf16", BF16, viaGemm32, toBF16, 1e-5, 1.0 / 128},
			path{"Gemm32Serial-bf16", BF16, viaSerial, toBF16, 1e-5, 1.0 / 128})
	}
	r := rand.New(rand.NewPCG(1, 2))
	shapes := [][3]int{{1, 7, 5}, {9, 13, 17}, {130, 40, 300}, {64, 257, 129}}
	for _, pt := range paths {
		if err := SetPrecision(pt.prec); err != nil {
			t.Fatal(err)
		}
		for _, sh := range shapes {
			m, n, k := sh[0], sh[1], sh[2]
			round := pt.round
			if pt.prec == BF16 && m < minBF16Rows {
				round = exact32 // Gemm32 computes these in float32
			}
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				tA, tB := tr[0], tr[1]
				for _, ab := range [][2]float32{{1, 0}, {1, 1}, {-0.5, 2}} {
					alpha, beta := ab[0], ab[1]
					ra, ca := m, k
					if tA {
						ra, ca = k, m
					}
					rb, cb := k, n
					if tB {
						rb, cb = n, k
					}
					lda, ldb, ldc := ca+3, cb+1, n+2
					a, b, c := randSlice(r, ra*lda), randSlice(r, rb*ldb), randSlice(r, m*ldc)
					c0 := append([]float32(nil), c...)
					name := fmt.Sprintf("%s %dx%dx%d tA=%v tB=%v alpha=%g beta=%g", pt.name, m, n, k, tA, tB, alpha, beta)
					if !pt.gemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
						t.Fatalf("%s: oneDNN has no kernel", name)
					}
					ref, scale := refGemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c0, ldc, round)
					refX, _ := refGemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c0, ldc, exact32)
					var worst, worstX float64
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							got := float64(c[i*ldc+j])
							worst = max(worst, math.Abs(got-ref[i*n+j])/scale[i*n+j])
							worstX = max(worstX, math.Abs(got-refX[i*n+j])/scale[i*n+j])
						}
						for j := n; j < ldc; j++ {
							if c[i*ldc+j] != c0[i*ldc+j] {
								t.Fatalf("%s: wrote C[%d][%d] outside the product", name, i, j)
							}
						}
					}
					if worst > pt.tol || worstX > pt.tolX || math.IsNaN(worst+worstX) {
						t.Errorf("%s: relative error %.2g (rounded operands, tolerance %.2g), %.2g (exact operands, tolerance %.2g)", name, worst, pt.tol, worstX, pt.tolX)
					}
					if pt.tolX > pt.tol && m >= minBF16Rows && worstX < 1e-5 {
						t.Errorf("%s: relative error %.2g against exact operands: not a bf16 product", name, worstX)
					}
				}
			}
		}
	}
}

func TestPrecision(t *testing.T) {
	defer SetPrecision(CurrentPrecision())
	for _, s := range []string{"f32", "bf16", "auto"} {
		p, err := ParsePrecision(s)
		if err != nil || p.String() != s {
			t.Errorf("ParsePrecision(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParsePrecision("fp16"); err == nil {
		t.Error("ParsePrecision(fp16): no error")
	}
	want := F32
	if NativeBF16() && HasBF16() {
		want = BF16
	}
	if got := Auto.Resolve(); got != want {
		t.Errorf("Auto.Resolve() = %v, want %v (native bf16 %v, oneDNN %v)", got, want, NativeBF16(), HasBF16())
	}
	if err := SetPrecision(BF16); (err == nil) != HasBF16() {
		t.Errorf("SetPrecision(bf16) = %v with oneDNN %v", err, HasBF16())
	}
}

func TestSlowBackend(t *testing.T) {
	if w := SlowBackend(64); w != "" {
		t.Errorf("SlowBackend(64) = %q, want none", w)
	}
	w := SlowBackend(4096)
	if HasBF16() != (w == "") || (w != "" && !strings.Contains(w, "-tags openblas")) {
		t.Errorf("SlowBackend(4096) = %q in the %s build", w, Backend())
	}
}

// TestStridedC: a bf16 product into a strided C (an attention tile's
// output inside the (T, QD) rows) computes the dense product with the same
// kernel and then sets C = beta·C + it, so it equals the dense-C product bit
// for bit (oneDNN's fast kernels take a dense C only; before, a strided C
// got a generic kernel, with other bits, 3–30× slower).
func TestStridedC(t *testing.T) {
	if !HasBF16() {
		t.Skip("no bf16 products in this build")
	}
	r := rand.New(rand.NewPCG(7, 8))
	m, n, k := 128, 96, 200
	a, b := randSlice(r, m*k), randSlice(r, k*n)
	dense := make([]float32, m*n)
	if !dnnlGemm(true, true, false, false, m, n, k, 1, a, k, b, n, 0, dense, n) {
		t.Fatal("oneDNN has no bf16 kernel")
	}
	ldc := 4 * n
	for _, beta := range []float32{0, 1, 0.5} {
		c := randSlice(r, m*ldc)
		c0 := append([]float32(nil), c...)
		dnnlGemm(true, true, false, false, m, n, k, 1, a, k, b, n, beta, c, ldc)
		for i := 0; i < m; i++ {
			for j := 0; j < ldc; j++ {
				want := c0[i*ldc+j]
				if j < n {
					want = dense[i*n+j]
					if beta != 0 {
						want = beta*c0[i*ldc+j] + dense[i*n+j]
					}
				}
				if got := c[i*ldc+j]; math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("beta %g: C[%d][%d] = %g, want %g", beta, i, j, got, want)
				}
			}
		}
	}
}
