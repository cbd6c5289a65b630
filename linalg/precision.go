package linalg

import (
	"fmt"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

// Precision is the arithmetic of the float32 matrix products (MatMulT,
// MatMul, Gemm32). BF16 rounds both operands to bfloat16 and accumulates in
// float32; the result, and every buffer the caller holds, stays float32.
type Precision uint8

const (
	F32  Precision = iota // float32 operands and accumulation
	BF16                  // bfloat16 operands, float32 accumulation (oneDNN build only)
	Auto                  // BF16 where the CPU has native bf16 and the build has oneDNN, else F32
)

// precisionNames is the spelling of each Precision in flags and reports.
var precisionNames = [...]string{F32: "f32", BF16: "bf16", Auto: "auto"}

func (p Precision) String() string {
	if int(p) < len(precisionNames) {
		return precisionNames[p]
	}
	return fmt.Sprintf("Precision(%d)", p)
}

// ParsePrecision reads "f32", "bf16" or "auto".
func ParsePrecision(s string) (Precision, error) {
	for p, name := range precisionNames {
		if s == name {
			return Precision(p), nil
		}
	}
	return 0, fmt.Errorf("unknown precision %q (want %s)", s, strings.Join(precisionNames[:], ", "))
}

// Set implements flag.Value (--precision): "f32", "bf16" or "auto".
func (p *Precision) Set(s string) error {
	v, err := ParsePrecision(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// MarshalText implements encoding.TextMarshaler: the precision's name, as
// --precision spells it.
func (p Precision) MarshalText() ([]byte, error) {
	if int(p) >= len(precisionNames) {
		return nil, fmt.Errorf("--precision: value %d, want %s", p, strings.Join(precisionNames[:], ", "))
	}
	return []byte(precisionNames[p]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; "" reads as F32.
func (p *Precision) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*p = F32
		return nil
	}
	if err := p.Set(string(b)); err != nil {
		return fmt.Errorf("--precision %q: %w", b, err)
	}
	return nil
}

// NativeBF16 reports whether the CPU computes bf16 products in hardware
// (AVX512-BF16 or AMX-BF16).
func NativeBF16() bool { return cpu.X86.HasAVX512BF16 || cpu.X86.HasAMXBF16 }

// HasBF16 reports whether this build can compute bf16 products (oneDNN).
func HasBF16() bool { return hasDNNL }

// Resolve turns Auto into F32 or BF16 for this CPU and build.
func (p Precision) Resolve() Precision {
	if p != Auto {
		return p
	}
	if NativeBF16() && HasBF16() {
		return BF16
	}
	return F32
}

// precision is the resolved Precision in use (F32 or BF16).
var precision atomic.Uint32

// SetPrecision selects the arithmetic of the float32 products for the whole
// program (after Resolve). BF16 needs the oneDNN build.
func SetPrecision(p Precision) error {
	p = p.Resolve()
	switch {
	case p > BF16:
		return fmt.Errorf("unknown precision %d", p)
	case p == BF16 && !HasBF16():
		return fmt.Errorf("precision bf16 needs the oneDNN build (%s); this binary uses %s", FastBuild, Backend())
	}
	precision.Store(uint32(p))
	return nil
}

// CurrentPrecision reports the Precision in use: F32 or BF16.
func CurrentPrecision() Precision { return Precision(precision.Load()) }

// FastBuild says how to build the fast backend, for messages.
const FastBuild = "apt-get install libopenblas-dev liblapacke-dev libdnnl-dev; go build -tags openblas ./cmd/cskv"

var errNoDNNL = fmt.Errorf("this build has no oneDNN (%s)", FastBuild)

// dnnlF32 makes large float32 products run on oneDNN rather than BLAS.
var dnnlF32 = true

// SlowBackend returns a warning for a model of the given width when this
// build's pure-Go products would make it slow (width ≥ 1024), else "".
func SlowBackend(width int) string {
	if hasDNNL || width < smallWidth {
		return ""
	}
	return fmt.Sprintf("hidden size %d on the pure-Go backend (%s) is slow; build the fast one: %s", width, Backend(), FastBuild)
}

// Products describes the matrix products this build and CPU offer, for
// `cskv inspect`.
func Products() string {
	native := "no native bf16"
	if NativeBF16() {
		native = "native bf16 (AVX512-BF16 or AMX)"
	}
	if !HasBF16() {
		return fmt.Sprintf("f32 only (%s); CPU: %s", Backend(), native)
	}
	return fmt.Sprintf("f32 and bf16 (oneDNN for large products); CPU: %s; auto = %v", native, Auto.Resolve())
}
