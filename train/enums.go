package train

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cskv/cskv/model/safetensors"
)

// The enumerations of Config. Each is a flag.Value parsed once from its flag
// and marshalled as its name, so run.json, checkpoints and the resume table
// hold the same words as the command line.

// Init is the factor initialisation, --init (docs/METHOD.md §2).
type Init int

const (
	SVDInit    Init = iota // truncated SVD of W
	ASVDInit               // SVD of W scaled by the mean |x| of each input channel to the power α
	WhitenInit             // SVD of W·L with XᵀX = L·Lᵀ (whitening)
)

var initNames = names{"svd", "asvd", "whiten"}

func (v Init) String() string                { return initNames.name(int(v)) }
func (v *Init) Set(s string) error           { return initNames.set((*int)(v), s) }
func (v Init) MarshalText() ([]byte, error)  { return initNames.text("init", int(v)) }
func (v *Init) UnmarshalText(b []byte) error { return initNames.unmarshal("init", (*int)(v), b) }

// Schedule is the learning-rate schedule, --schedule (Config.LRAt).
type Schedule int

const (
	ScheduleConstant Schedule = iota // Config.LR at every step
	ScheduleCosine                   // linear warm-up over Config.Warmup steps, then cosine decay to 0
)

var scheduleNames = names{"constant", "cosine"}

func (v Schedule) String() string               { return scheduleNames.name(int(v)) }
func (v *Schedule) Set(s string) error          { return scheduleNames.set((*int)(v), s) }
func (v Schedule) MarshalText() ([]byte, error) { return scheduleNames.text("schedule", int(v)) }
func (v *Schedule) UnmarshalText(b []byte) error {
	return scheduleNames.unmarshal("schedule", (*int)(v), b)
}

// KeyQuant is how quantisation-aware training groups the key features,
// --k-quant (docs/METHOD.md §4).
type KeyQuant int

const (
	KeyPerChannel KeyQuant = iota // KIVI: per channel over Config.QuantWindow tokens
	KeyPerToken                   // per token, as the values
)

var keyQuantNames = names{"channel", "token"}

func (v KeyQuant) String() string               { return keyQuantNames.name(int(v)) }
func (v *KeyQuant) Set(s string) error          { return keyQuantNames.set((*int)(v), s) }
func (v KeyQuant) MarshalText() ([]byte, error) { return keyQuantNames.text("k-quant", int(v)) }
func (v *KeyQuant) UnmarshalText(b []byte) error {
	return keyQuantNames.unmarshal("k-quant", (*int)(v), b)
}

// ZeroPoint is the quantisation's zero-point rule, --quant-zero
// (docs/METHOD.md §4).
type ZeroPoint int

const (
	ZeroFree  ZeroPoint = iota // the zero point is not rounded into the code range
	ZeroClamp                  // clamped to [0, 2^b − 1], the reference code's rule
)

var zeroPointNames = names{"free", "clamp"}

func (v ZeroPoint) String() string               { return zeroPointNames.name(int(v)) }
func (v *ZeroPoint) Set(s string) error          { return zeroPointNames.set((*int)(v), s) }
func (v ZeroPoint) MarshalText() ([]byte, error) { return zeroPointNames.text("quant-zero", int(v)) }
func (v *ZeroPoint) UnmarshalText(b []byte) error {
	return zeroPointNames.unmarshal("quant-zero", (*int)(v), b)
}

// DType is the element type of the exported factors, --dtype.
type DType int

const (
	DTypeF32 DType = iota
	DTypeF16
	DTypeBF16
)

var dtypeNames = names{"f32", "f16", "bf16"}

// exportDTypes is each DType's safetensors element type, in DType order.
var exportDTypes = []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16}

func (v DType) String() string                { return dtypeNames.name(int(v)) }
func (v *DType) Set(s string) error           { return dtypeNames.set((*int)(v), s) }
func (v DType) MarshalText() ([]byte, error)  { return dtypeNames.text("dtype", int(v)) }
func (v *DType) UnmarshalText(b []byte) error { return dtypeNames.unmarshal("dtype", (*int)(v), b) }

// names is the spelling table of one enumeration, in value order.
type names []string

func (n names) valid(v int) bool { return v >= 0 && v < len(n) }

// name is value v's spelling ("value(v)" outside the table).
func (n names) name(v int) string {
	if n.valid(v) {
		return n[v]
	}
	return fmt.Sprintf("value(%d)", v)
}

// want lists the spellings: "want a, b or c".
func (n names) want() string {
	if len(n) == 1 {
		return "want " + n[0]
	}
	return "want " + strings.Join(n[:len(n)-1], ", ") + " or " + n[len(n)-1]
}

// set parses s into *v; the flag package names the flag in front of the
// error.
func (n names) set(v *int, s string) error {
	i := slices.Index(n, s)
	if i < 0 {
		return fmt.Errorf("%s", n.want())
	}
	*v = i
	return nil
}

func (n names) text(flag string, v int) ([]byte, error) {
	if !n.valid(v) {
		return nil, fmt.Errorf("--%s: value %d, %s", flag, v, n.want())
	}
	return []byte(n[v]), nil
}

func (n names) unmarshal(flag string, v *int, b []byte) error {
	if err := n.set(v, string(b)); err != nil {
		return fmt.Errorf("--%s %q: %w", flag, b, err)
	}
	return nil
}
