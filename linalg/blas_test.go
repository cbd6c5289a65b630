package linalg

import (
	"math"
	"slices"
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
	// Per shape, and the heavy ones: 64×48×32 and 64×32×32 carry 52% and
	// 35% of the FLOP, 16×48×32 13%.
	big, sq, small := ProductShape{64, 48, 32}, ProductShape{64, 32, 32}, ProductShape{16, 48, 32}
	if len(s.Shapes) != 3 || s.Shapes[big] != 2*64*48*32 || s.Shapes[sq] != 2*64*32*32 || s.Shapes[small] != 2*16*48*32 {
		t.Errorf("shapes %v, want 3 with their 2·m·n·k", s.Shapes)
	}
	if h := s.Heavy(0.2); !slices.Equal(h, []ProductShape{big, sq}) {
		t.Errorf("Heavy(0.2) = %v, want %v", h, []ProductShape{big, sq})
	}
	if h := s.Heavy(0.05); len(h) != 3 || h[2] != small {
		t.Errorf("Heavy(0.05) = %v, want all three, %v last", h, small)
	}
	if u := s.Plus(s); u.Shapes[big] != 2*s.Shapes[big] || len(u.Shapes) != 3 || len(s.Shapes) != 3 || s.Shapes[big] != 2*64*48*32 {
		t.Errorf("Plus: shapes %v from %v", u.Shapes, s.Shapes)
	}
	if again := CountProducts(false); again.Calls != 0 || again.Shapes != nil {
		t.Errorf("counted %+v while stopped", again)
	}
	if b := (ProductStats{Seconds: 1, SerialSeconds: 4}).Busy(2); b != 3 {
		t.Errorf("Busy = %g, want 3", b)
	}
}
