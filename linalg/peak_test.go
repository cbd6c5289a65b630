package linalg

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkPeak reports the matrix-product rate at the Llama-3-8B shapes
// (PeakShapes): BLAS and oneDNN in float32, oneDNN in bf16, dense operands
// (see Peak), and Gemm32 as the training graph calls it (C = A·Bᵀ with B
// stored [out, in], operands rounded to bf16 inside the timed call).
func BenchmarkPeak(b *testing.B) {
	defer SetPrecision(CurrentPrecision())
	for _, sh := range PeakShapes {
		m, n, k := sh[0], sh[1], sh[2]
		flop := 2 * float64(m) * float64(n) * float64(k)
		b.Run(fmt.Sprintf("%dx%dx%d/blas-f32", m, n, k), func(b *testing.B) {
			b.ReportMetric(blasPeakProduct(m, n, k).rate(0.5*float64(b.N)), "GFLOP/s")
		})
		for _, bf16 := range []bool{false, true} {
			name := map[bool]string{false: "dnnl-f32", true: "dnnl-bf16"}[bf16]
			b.Run(fmt.Sprintf("%dx%dx%d/%s", m, n, k, name), func(b *testing.B) {
				prod, err := dnnlPeakProduct(bf16, m, n, k)
				if err != nil {
					b.Skip(err)
				}
				b.Logf("kernel %s", prod.kernel)
				b.ReportMetric(prod.rate(0.5*float64(b.N)), "GFLOP/s")
			})
		}
		for _, p := range []Precision{F32, BF16} {
			b.Run(fmt.Sprintf("%dx%dx%d/Gemm32-%v", m, n, k, p), func(b *testing.B) {
				if err := SetPrecision(p); err != nil {
					b.Skip(err)
				}
				x, w, c := make([]float32, m*k), make([]float32, n*k), make([]float32, m*n)
				Gemm32(false, true, m, n, k, 1, x, k, w, k, 0, c, n)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					Gemm32(false, true, m, n, k, 1, x, k, w, k, 0, c, n)
				}
				b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkLayerProducts times the seven weight products of a Llama-2-7B
// layer's frozen forward on 512 tokens (q, k, v, o: 4096×4096; gate, up:
// 11008×4096; down: 4096×11008) one after another over frozen weights and
// nothing else: the ceiling of `cskv bench`'s forward row. In bf16 its 404
// MiB of rounded weights stream from memory on every pass, where the peak
// reuses one product's operands from the caches; the note of issue 11 gives
// what it measured. Reports GFLOP/s and the fraction of the same
// precision's peak (the best of PeakShapes, as `cskv bench` measures it).
func BenchmarkLayerProducts(b *testing.B) {
	defer SetPrecision(CurrentPrecision())
	const M, D, F = 512, 4096, 11008
	for _, p := range []Precision{F32, BF16} {
		b.Run(p.String(), func(b *testing.B) {
			if err := SetPrecision(p); err != nil {
				b.Skip(err)
			}
			r := rand.New(rand.NewPCG(9, 10))
			w := [7][]float32{randSlice(r, D*D), randSlice(r, D*D), randSlice(r, D*D), randSlice(r, D*D),
				randSlice(r, F*D), randSlice(r, F*D), randSlice(r, D*F)}
			for _, s := range w {
				Freeze(s)
				defer Thaw(s)
			}
			x, o, g := randSlice(r, M*D), make([]float32, M*D), make([]float32, M*F)
			pass := func() {
				for i := 0; i < 4; i++ { // q, k, v, o
					Gemm32(false, true, M, D, D, 1, x, D, w[i], D, 0, o, D)
				}
				Gemm32(false, true, M, F, D, 1, o, D, w[4], D, 0, g, F) // gate
				Gemm32(false, true, M, F, D, 1, o, D, w[5], D, 0, g, F) // up
				Gemm32(false, true, M, D, F, 1, g, F, w[6], F, 0, x, D) // down
			}
			pass() // rounds the frozen weights in bf16
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pass()
			}
			gflops := 2 * M * (4*D*D + 3*D*F) * float64(b.N) / b.Elapsed().Seconds() / 1e9
			b.StopTimer()
			var peak float64
			for _, sh := range PeakShapes {
				if r, err := Peak(p, sh[0], sh[1], sh[2], 0.5); err == nil {
					peak = max(peak, r.GFLOPs)
				}
			}
			if peak > 0 {
				b.ReportMetric(gflops/peak, "of-peak")
			}
			b.ReportMetric(gflops, "GFLOP/s")
		})
	}
}

// TestProbe checks that a probe re-times the product its peak measured:
// the same kernel, a positive rate, for each precision this build has.
func TestProbe(t *testing.T) {
	precs := []Precision{F32}
	if HasBF16() {
		precs = append(precs, BF16)
	}
	for _, p := range precs {
		r, err := Peak(p, 64, 96, 128, 0.01)
		if err != nil {
			t.Fatal(err)
		}
		probe, err := NewProbe(r)
		if err != nil {
			t.Fatal(err)
		}
		if g := probe.Sample(); !(g > 0) || probe.prod.kernel != r.Kernel {
			t.Errorf("%v: probe of %q samples %g GFLOP/s with %q", p, r.Kernel, g, probe.prod.kernel)
		}
	}
}
