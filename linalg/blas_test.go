package linalg

import (
	"math"
	"testing"
)

func TestMatMulT(t *testing.T) {
	// A (2,3), B (2,3): C = A·Bᵀ (2,2)
	a := []float32{1, 2, 3, 4, 5, 6}
	b := []float32{1, 0, 1, 0, 1, 0}
	c := make([]float32, 4)
	MatMulT(c, a, b, 2, 2, 3, false)
	want := []float32{4, 2, 10, 5}
	for i := range want {
		if math.Abs(float64(c[i]-want[i])) > 1e-6 {
			t.Fatalf("MatMulT = %v, want %v (backend %s)", c, want, Backend())
		}
	}
	MatMul(c, a, []float32{1, 0, 0, 1, 1, 1}, 2, 2, 3, false)
	want = []float32{4, 5, 10, 11}
	for i := range want {
		if math.Abs(float64(c[i]-want[i])) > 1e-6 {
			t.Fatalf("MatMul = %v, want %v", c, want)
		}
	}
}
