package linalg

import (
	"fmt"
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
			b.ReportMetric(blasPeak(m, n, k, 0.5*float64(b.N)), "GFLOP/s")
		})
		for _, bf16 := range []bool{false, true} {
			name := map[bool]string{false: "dnnl-f32", true: "dnnl-bf16"}[bf16]
			b.Run(fmt.Sprintf("%dx%dx%d/%s", m, n, k, name), func(b *testing.B) {
				g, kernel, err := dnnlPeak(bf16, m, n, k, 0.5*float64(b.N))
				if err != nil {
					b.Skip(err)
				}
				b.Logf("kernel %s", kernel)
				b.ReportMetric(g, "GFLOP/s")
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
