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

// TestCountProducts checks the product counter: every Gemm32 and
// Gemm32Serial while on, with 2·m·n·k each, nothing once stopped.
func TestCountProducts(t *testing.T) {
	a, b, c := make([]float32, 64*32), make([]float32, 32*48), make([]float32, 64*48)
	CountProducts(true)
	Gemm32(false, false, 64, 48, 32, 1, a, 32, b, 48, 0, c, 48)
	Gemm32Serial(false, false, 16, 48, 32, 1, a, 32, b, 48, 0, c, 48)
	MatMulT(c, a, a, 64, 64/2, 32, false) // A·Aᵀ of the first 32 rows: (64, 32)
	s := CountProducts(false)
	Gemm32(false, false, 64, 48, 32, 1, a, 32, b, 48, 0, c, 48)
	want := 2 * float64(64*48*32+16*48*32+64*32*32)
	if s.Calls != 3 || s.FLOP != want || s.Seconds <= 0 || s.SerialSeconds <= 0 {
		t.Errorf("counted %+v, want 3 calls, %g FLOP, positive times", s, want)
	}
	if again := CountProducts(false); again.Calls != 0 {
		t.Errorf("counted %+v while stopped", again)
	}
	if b := (ProductStats{Seconds: 1, SerialSeconds: 4}).Busy(2); b != 3 {
		t.Errorf("Busy = %g, want 3", b)
	}
}
