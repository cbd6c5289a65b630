package quant

import (
	"fmt"
	"math"

	"github.com/cskv/cskv/model/dtype"
)

// Grouping says which numbers share one scale and zero point.
type Grouping int

const (
	// PerToken groups GroupSize consecutive channels of one token.
	PerToken Grouping = iota
	// PerChannel groups one channel across GroupSize consecutive tokens (KIVI).
	PerChannel
)

// String names the grouping as in export metadata.
func (g Grouping) String() string {
	switch g {
	case PerToken:
		return "per-token"
	case PerChannel:
		return "per-channel"
	}
	return fmt.Sprintf("grouping(%d)", int(g))
}

// Off is the bit width that disables quantisation.
const Off = 16

// Constants of the rule.
const (
	rangeFloor = float32(1e-5)    // smallest group range
	minScale   = float32(0x1p-14) // smallest normal fp16
	maxScale   = float32(65504)   // largest finite fp16
	maxZero    = 2048             // fp16 holds every integer up to here
)

// Spec is one side's quantisation setting.
type Spec struct {
	Bits      int      // 2, 3, 4 or 8; 16 = off
	Grouping  Grouping // PerToken or PerChannel
	GroupSize int      // numbers per group (channels for PerToken, tokens for PerChannel); ≥ 1 unless Bits = 16
	ClampZero bool     // clamp the zero point to [0, 2^b − 1] as the reference code does
}

// Enabled reports whether the spec quantises (Bits ≠ 16).
func (s Spec) Enabled() bool { return s.Bits != Off }

// String describes the spec for logs and metadata, e.g. "4-bit per-token g8 free-zero".
func (s Spec) String() string {
	if !s.Enabled() {
		return "16-bit (off)"
	}
	z := "free-zero"
	if s.ClampZero {
		z = "clamped-zero"
	}
	return fmt.Sprintf("%d-bit %s g%d %s", s.Bits, s.Grouping, s.GroupSize, z)
}

// Validate checks the bit width and, when quantisation is on, the grouping.
func (s Spec) Validate() error {
	switch s.Bits {
	case Off:
		return nil
	case 2, 3, 4, 8:
	default:
		return fmt.Errorf("quant: bits %d not supported (want 2, 3, 4, 8, or 16 for off)", s.Bits)
	}
	if s.Grouping != PerToken && s.Grouping != PerChannel {
		return fmt.Errorf("quant: unknown grouping %d", int(s.Grouping))
	}
	if s.GroupSize < 1 {
		return fmt.Errorf("quant: group size %d must be at least 1", s.GroupSize)
	}
	return nil
}

// check validates s against a (rows, cols) matrix.
func (s Spec) check(rows, cols int) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if rows < 0 || cols < 0 {
		return fmt.Errorf("quant: negative shape (%d, %d)", rows, cols)
	}
	if !s.Enabled() {
		return nil
	}
	switch s.Grouping {
	case PerToken:
		if cols%s.GroupSize != 0 {
			return fmt.Errorf("quant: per-token group size %d does not divide %d columns", s.GroupSize, cols)
		}
	case PerChannel:
		if rows%s.GroupSize != 0 {
			return fmt.Errorf("quant: per-channel group size %d does not divide %d rows", s.GroupSize, rows)
		}
	}
	return nil
}

// Groups returns the number of groups of a (rows, cols) matrix (0 when off).
func (s Spec) Groups(rows, cols int) (int, error) {
	if err := s.check(rows, cols); err != nil {
		return 0, err
	}
	if !s.Enabled() {
		return 0, nil
	}
	return rows * cols / s.GroupSize, nil
}

// group describes where group number gi lives: first element, stride between
// elements, and length.
func (s Spec) group(gi, cols int) (first, stride int) {
	if s.Grouping == PerToken {
		perRow := cols / s.GroupSize
		return (gi/perRow)*cols + (gi%perRow)*s.GroupSize, 1
	}
	return (gi/cols)*s.GroupSize*cols + gi%cols, cols
}

// params computes a group's scale and zero from its minimum and maximum.
func params(mn, mx float32, bits int, clampZero bool) (scale, zero float32) {
	qmax := float32(int(1)<<bits - 1)
	rng := mx - mn
	if rng < rangeFloor {
		rng = rangeFloor
	}
	s := rng / qmax // +Inf when mx − mn overflows float32; capped next
	if s > maxScale {
		s = maxScale
	}
	s = dtype.RoundF16(s)
	if !clampZero {
		if f := roundF16Up(abs32(mn) / maxZero); f > s {
			s = f
		}
		if s > maxScale {
			s = maxScale
		}
	}
	if s < minScale {
		s = minScale
	}
	z := -roundEven(mn / s)
	if clampZero {
		z = clamp(z, 0, qmax)
	} else {
		z = clamp(z, -maxZero, maxZero) // only reachable for |mn| > 65504·2048
	}
	return s, z
}

// code maps x to its integer code.
func code(x, scale, zero, qmax float32) uint8 {
	return uint8(clamp(roundEven(x/scale)+zero, 0, qmax))
}

// dequant maps a code back; the one expression every path uses.
func dequant(c, scale, zero float32) float32 { return (c - zero) * scale }

func roundEven(v float32) float32 { return float32(math.RoundToEven(float64(v))) }

func clamp(v, lo, hi float32) float32 {
	if v < lo { // NaN never reaches here: inputs are checked finite
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// roundF16Up returns the smallest fp16 value ≥ v for v ≥ 0 (+Inf beyond 65504).
func roundF16Up(v float32) float32 {
	h := dtype.F32ToF16(v)
	if dtype.F16ToF32(h) < v {
		h++ // positive halves are ordered like their bit patterns
	}
	return dtype.F16ToF32(h)
}

// minMax scans one group; it reports the first non-finite element.
func minMax(x []float32, first, stride, n int) (mn, mx float32, bad int) {
	mn, mx = float32(math.Inf(1)), float32(math.Inf(-1))
	for i, j := 0, first; i < n; i, j = i+1, j+stride {
		v := x[j]
		if v != v || math.IsInf(float64(v), 0) {
			return 0, 0, j
		}
		if v < mn {
			mn = v
		}
		if v > mx {
			mx = v
		}
	}
	return mn, mx, -1
}

// FakeQuant writes x̂ of x (rows, cols) into dst (rows, cols) and, when mask
// is not nil, the straight-through mask (rows, cols): 1 where lo ≤ x ≤ hi of
// its group (inclusive), else 0. dst may alias x; mask must not. With Bits 16
// dst = x and mask = 1.
func FakeQuant(dst, mask, x []float32, rows, cols int, s Spec) error {
	if err := s.check(rows, cols); err != nil {
		return err
	}
	n := rows * cols
	if len(x) != n || len(dst) != n || (mask != nil && len(mask) != n) {
		return fmt.Errorf("quant: fake-quant of (%d, %d): len(x) = %d, len(dst) = %d, len(mask) = %d", rows, cols, len(x), len(dst), len(mask))
	}
	if !s.Enabled() {
		copy(dst, x)
		for i := range mask {
			mask[i] = 1
		}
		return nil
	}
	qmax := float32(int(1)<<s.Bits - 1)
	nGroups := n / s.GroupSize
	for gi := 0; gi < nGroups; gi++ {
		first, stride := s.group(gi, cols)
		mn, mx, bad := minMax(x, first, stride, s.GroupSize)
		if bad >= 0 {
			return fmt.Errorf("quant: non-finite value %g at row %d, column %d", x[bad], bad/cols, bad%cols)
		}
		scale, zero := params(mn, mx, s.Bits, s.ClampZero)
		lo, hi := dequant(0, scale, zero), dequant(qmax, scale, zero)
		for i, j := 0, first; i < s.GroupSize; i, j = i+1, j+stride {
			v := x[j]
			if mask != nil {
				if lo <= v && v <= hi {
					mask[j] = 1
				} else {
					mask[j] = 0
				}
			}
			dst[j] = dequant(float32(code(v, scale, zero, qmax)), scale, zero)
		}
	}
	return nil
}

// Codes is a quantised (Rows, Cols) matrix.
type Codes struct {
	Spec       Spec
	Rows, Cols int
	Q          []uint8  // (Rows, Cols) one code per element, row-major
	Scale      []uint16 // (groups) fp16 bits, groups numbered as in the package doc
	Zero       []uint16 // (groups) fp16 bits, integers
}

// Quantize quantises x (rows, cols) under s (Bits must not be 16).
func Quantize(x []float32, rows, cols int, s Spec) (Codes, error) {
	if err := s.check(rows, cols); err != nil {
		return Codes{}, err
	}
	if !s.Enabled() {
		return Codes{}, fmt.Errorf("quant: quantize with bits %d: quantisation is off", s.Bits)
	}
	n := rows * cols
	if len(x) != n {
		return Codes{}, fmt.Errorf("quant: quantize (%d, %d): len(x) = %d", rows, cols, len(x))
	}
	nGroups := n / s.GroupSize
	c := Codes{Spec: s, Rows: rows, Cols: cols, Q: make([]uint8, n), Scale: make([]uint16, nGroups), Zero: make([]uint16, nGroups)}
	qmax := float32(int(1)<<s.Bits - 1)
	for gi := 0; gi < nGroups; gi++ {
		first, stride := s.group(gi, cols)
		mn, mx, bad := minMax(x, first, stride, s.GroupSize)
		if bad >= 0 {
			return Codes{}, fmt.Errorf("quant: non-finite value %g at row %d, column %d", x[bad], bad/cols, bad%cols)
		}
		scale, zero := params(mn, mx, s.Bits, s.ClampZero)
		c.Scale[gi], c.Zero[gi] = dtype.F32ToF16(scale), dtype.F32ToF16(zero)
		for i, j := 0, first; i < s.GroupSize; i, j = i+1, j+stride {
			c.Q[j] = code(x[j], scale, zero, qmax)
		}
	}
	return c, nil
}

// Dequantize writes x̂ of c into dst (c.Rows, c.Cols).
func Dequantize(dst []float32, c Codes) error {
	s := c.Spec
	if err := s.check(c.Rows, c.Cols); err != nil {
		return err
	}
	if !s.Enabled() {
		return fmt.Errorf("quant: dequantize with bits %d: quantisation is off", s.Bits)
	}
	n := c.Rows * c.Cols
	nGroups := n / s.GroupSize
	if len(dst) != n || len(c.Q) != n || len(c.Scale) != nGroups || len(c.Zero) != nGroups {
		return fmt.Errorf("quant: dequantize (%d, %d) with %d groups: len(dst) = %d, len(Q) = %d, len(Scale) = %d, len(Zero) = %d",
			c.Rows, c.Cols, nGroups, len(dst), len(c.Q), len(c.Scale), len(c.Zero))
	}
	qmax := uint8(int(1)<<s.Bits - 1)
	for gi := 0; gi < nGroups; gi++ {
		first, stride := s.group(gi, c.Cols)
		scale, zero := dtype.F16ToF32(c.Scale[gi]), dtype.F16ToF32(c.Zero[gi])
		for i, j := 0, first; i < s.GroupSize; i, j = i+1, j+stride {
			q := c.Q[j]
			if q > qmax {
				return fmt.Errorf("quant: code %d at row %d, column %d exceeds %d bits", q, j/c.Cols, j%c.Cols, s.Bits)
			}
			dst[j] = dequant(float32(q), scale, zero)
		}
	}
	return nil
}
