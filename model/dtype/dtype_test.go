package dtype

import (
	"math"
	"testing"
)

func TestF16(t *testing.T) {
	cases := []struct {
		h uint16
		f float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.960464477539063e-08},
		{0x0400, 6.103515625e-05}, {0x3555, 0.333251953125}, {0x0000, 0}, {0x7c00, float32(math.Inf(1))},
	}
	for _, c := range cases {
		if got := F16ToF32(c.h); got != c.f {
			t.Errorf("F16ToF32(%#04x) = %g, want %g", c.h, got, c.f)
		}
		if got := F32ToF16(c.f); got != c.h {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	// every half value round-trips
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		if f != f {
			continue
		}
		if got := F32ToF16(f); got != uint16(h) {
			t.Fatalf("round trip %#04x -> %g -> %#04x", h, f, got)
		}
	}
	if got := F32ToF16(1 + 1.0/4096); got != 0x3c00 { // tie to even
		t.Errorf("tie: got %#04x", got)
	}
	if got := F32ToF16(1e6); got != 0x7c00 {
		t.Errorf("overflow: got %#04x", got)
	}
}

func TestBF16(t *testing.T) {
	if got := BF16ToF32(0x3f80); got != 1 {
		t.Errorf("BF16ToF32(0x3f80) = %g", got)
	}
	if got := F32ToBF16(1.00390625); got != 0x3f80 { // tie to even
		t.Errorf("tie: %#04x", got)
	}
	if got := F32ToBF16(-3.140625); BF16ToF32(got) != -3.140625 {
		t.Errorf("exact value lost: %#04x", got)
	}
}
