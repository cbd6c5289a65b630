package train

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cskv/cskv/model/safetensors"
)

// The enumerations of Config. Each is an enum: a flag.Value parsed once from
// its flag and marshalled as its name, so run.json, checkpoints and the
// resume table hold the same words as the command line.

// Init is the factor initialisation, --init (docs/METHOD.md §2).
type Init = enum[initSpelling]

const (
	SVDInit    Init = iota // truncated SVD of W
	ASVDInit               // SVD of W scaled by the mean |x| of each input channel to the power α
	WhitenInit             // SVD of W·L with XᵀX = L·Lᵀ (whitening)
)

// Schedule is the learning-rate schedule, --schedule (Config.LRAt).
type Schedule = enum[scheduleSpelling]

const (
	ScheduleConstant Schedule = iota // Config.LR at every step
	ScheduleCosine                   // linear warm-up over Config.Warmup steps, then cosine decay to 0
)

// KeyQuant is how quantisation-aware training groups the key features,
// --k-quant (docs/METHOD.md §4).
type KeyQuant = enum[keyQuantSpelling]

const (
	KeyPerChannel KeyQuant = iota // KIVI: per channel over Config.QuantWindow tokens
	KeyPerToken                   // per token, as the values
)

// ZeroPoint is the quantisation's zero-point rule, --quant-zero
// (docs/METHOD.md §4).
type ZeroPoint = enum[zeroPointSpelling]

const (
	ZeroFree  ZeroPoint = iota // the zero point is not rounded into the code range
	ZeroClamp                  // clamped to [0, 2^b − 1], the reference code's rule
)

// DType is the element type of the exported factors, --dtype.
type DType = enum[dtypeSpelling]

const (
	DTypeF32 DType = iota
	DTypeF16
	DTypeBF16
)

// exportDTypes is each DType's safetensors element type, in DType order.
var exportDTypes = []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16}

// Objective is what the rank allocation minimises, --objective
// (docs/METHOD.md §7).
type Objective = enum[objectiveSpelling]

const (
	ObjectiveOut         Objective = iota // relative output-term error on held-out sequences
	ObjectiveOutMixed                     // out plus the same error with the bi-branch window AllocWindow
	ObjectiveOutResidual                  // output-term error relative to the residual stream's mean square
	ObjectiveKV                           // closed-form relative KV error of the whitened init
)

// The spellings: each enumeration's flag and its names in value order.
type (
	initSpelling      struct{}
	scheduleSpelling  struct{}
	keyQuantSpelling  struct{}
	zeroPointSpelling struct{}
	dtypeSpelling     struct{}
	objectiveSpelling struct{}
)

func (initSpelling) spelling() (string, names)      { return "init", names{"svd", "asvd", "whiten"} }
func (scheduleSpelling) spelling() (string, names)  { return "schedule", names{"constant", "cosine"} }
func (keyQuantSpelling) spelling() (string, names)  { return "k-quant", names{"channel", "token"} }
func (zeroPointSpelling) spelling() (string, names) { return "quant-zero", names{"free", "clamp"} }
func (dtypeSpelling) spelling() (string, names)     { return "dtype", names{"f32", "f16", "bf16"} }
func (objectiveSpelling) spelling() (string, names) {
	return "objective", names{"out", "out-mixed", "out-residual", "kv"}
}

// spelling names an enumeration: its flag and the names of its values.
type spelling interface{ spelling() (flag string, n names) }

// enum is one enumeration of Config, spelt by S: a flag.Value and an
// encoding.TextMarshaler whose text is the flag's word for the value.
type enum[S spelling] int

func table[S spelling]() (string, names) {
	var s S
	return s.spelling()
}

// Valid reports whether v is one of the enumeration's values.
func (v enum[S]) Valid() bool { _, n := table[S](); return n.valid(int(v)) }

// String is v's flag spelling ("value(v)" outside the table).
func (v enum[S]) String() string { _, n := table[S](); return n.name(int(v)) }

// Set parses s; the flag package names the flag in front of the error.
func (v *enum[S]) Set(s string) error { _, n := table[S](); return n.set((*int)(v), s) }

// Check names the flag, the value and the spellings when v is outside the
// table ("--init 7: want svd, asvd or whiten").
func (v enum[S]) Check() error {
	flag, n := table[S]()
	if !n.valid(int(v)) {
		return fmt.Errorf("--%s %d: %s", flag, int(v), n.want())
	}
	return nil
}

func (v enum[S]) MarshalText() ([]byte, error) {
	flag, n := table[S]()
	if !n.valid(int(v)) {
		return nil, fmt.Errorf("--%s: value %d, %s", flag, int(v), n.want())
	}
	return []byte(n[v]), nil
}

func (v *enum[S]) UnmarshalText(b []byte) error {
	flag, n := table[S]()
	if err := n.set((*int)(v), string(b)); err != nil {
		return fmt.Errorf("--%s %q: %w", flag, b, err)
	}
	return nil
}

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

// set parses s into *v.
func (n names) set(v *int, s string) error {
	i := slices.Index(n, s)
	if i < 0 {
		return fmt.Errorf("%s", n.want())
	}
	*v = i
	return nil
}
