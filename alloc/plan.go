package alloc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/cskv/cskv/atomicfile"
)

// Side is keys or values.
type Side int

const (
	K Side = iota
	V
)

// String is "k" or "v", as in the plan file.
func (s Side) String() string {
	if s == K {
		return "k"
	}
	return "v"
}

// MarshalText writes "k" or "v".
func (s Side) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads "k" or "v".
func (s *Side) UnmarshalText(b []byte) error {
	switch string(b) {
	case "k":
		*s = K
	case "v":
		*s = V
	default:
		return fmt.Errorf("side %q: want k or v", b)
	}
	return nil
}

// Curve is one layer-side's measured error as a function of rank.
type Curve struct {
	Layer int       `json:"layer"`
	Side  Side      `json:"side"`
	Ranks []int     `json:"ranks"`             // candidate ranks, ascending, on the side's grid
	Bytes []int64   `json:"bytes"`             // compressed-branch bytes of Plan.UnitTokens tokens at each rank
	KV    []float64 `json:"kv_rel"`            // closed-form relative KV error at each rank: Σ_{i≥r} μ_i / Σ μ_i (TailCurve)
	Out   []float64 `json:"out_rel,omitempty"` // output-term error of the init truncated to each rank, on held-out sequences, over the mean square of the output
	// OutResidual is the same error over the mean square of the residual
	// stream entering the layer (what the error is added to).
	OutResidual []float64 `json:"out_residual,omitempty"`
	// OutBi is Out with the bi-branch window of the evaluation inside the
	// output term (objective out-mixed).
	OutBi []float64 `json:"out_bi_rel,omitempty"`
	Err   []float64 `json:"err"`  // the error the knapsack minimised (see Plan.Objective)
	Rank  int       `json:"rank"` // the chosen rank
}

// LayerRanks is one layer's ranks.
type LayerRanks struct {
	Layer int `json:"layer"`
	KRank int `json:"k_rank"`
	VRank int `json:"v_rank"`
}

// Plan is the allocation: ranks per layer and side, the budget they meet and
// the curves they were chosen from. It is the plan file (JSON).
type Plan struct {
	Version     int          `json:"version"`
	Model       string       `json:"model"`                  // base name of the model file
	ModelDigest string       `json:"model_digest,omitempty"` // the model's digest
	Layers      int          `json:"layers"`
	KVDim       int          `json:"kv_dim"`
	Budget      float64      `json:"budget"` // fraction of the fp16 cache (0 = explicit plan)
	KBits       int          `json:"k_bits"`
	VBits       int          `json:"v_bits"`
	KQuant      string       `json:"k_quant"` // channel or token
	QuantWindow int          `json:"quant_window"`
	Objective   string       `json:"objective"`   // what Curve.Err is: "kv" (closed form) or "out" (output term)
	UnitTokens  int          `json:"unit_tokens"` // tokens the byte counts are over
	BudgetBytes int64        `json:"budget_bytes"`
	PlanBytes   int64        `json:"plan_bytes"`
	FP16Bytes   int64        `json:"fp16_bytes"` // the uncompressed fp16 cache of UnitTokens tokens
	Ranks       []LayerRanks `json:"ranks"`
	Curves      []Curve      `json:"curves,omitempty"`
	Seconds     float64      `json:"seconds,omitempty"` // time the allocation took
}

// PlanVersion is the plan file's format version.
const PlanVersion = 1

// Fraction is the plan's bytes as a fraction of the fp16 cache.
func (p *Plan) Fraction() float64 {
	if p.FP16Bytes == 0 {
		return 0
	}
	return float64(p.PlanBytes) / float64(p.FP16Bytes)
}

// KRanks and VRanks list the ranks in layer order.
func (p *Plan) KRanks() []int { return p.side(K) }

// VRanks lists the value ranks in layer order.
func (p *Plan) VRanks() []int { return p.side(V) }

func (p *Plan) side(s Side) []int {
	out := make([]int, len(p.Ranks))
	for i, r := range p.Ranks {
		out[i] = r.KRank
		if s == V {
			out[i] = r.VRank
		}
	}
	return out
}

// Check validates the plan against a model of `layers` layers with kv_dim
// kvDim: one entry per layer in order, ranks in [1, kvDim].
func (p *Plan) Check(layers, kvDim int) error {
	if p.Version != PlanVersion {
		return fmt.Errorf("plan version %d, want %d", p.Version, PlanVersion)
	}
	if len(p.Ranks) != layers {
		return fmt.Errorf("plan has ranks for %d layers, the model has %d", len(p.Ranks), layers)
	}
	for i, r := range p.Ranks {
		if r.Layer != i {
			return fmt.Errorf("plan entry %d is for layer %d (want layers in order)", i, r.Layer)
		}
		if r.KRank < 1 || r.KRank > kvDim || r.VRank < 1 || r.VRank > kvDim {
			return fmt.Errorf("plan layer %d: ranks k %d, v %d outside [1, kv_dim %d]", i, r.KRank, r.VRank, kvDim)
		}
	}
	return nil
}

// Write stores the plan atomically as indented JSON.
func (p *Plan) Write(path string) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("plan %s: %w", path, err)
	}
	if err := atomicfile.Write(path, append(b, '\n')); err != nil {
		return fmt.Errorf("plan %s: %w", path, err)
	}
	return nil
}

// ReadPlan reads a plan file; unknown fields are an error (a misspelt key
// would otherwise be ignored silently).
func ReadPlan(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Plan
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("plan %s: %w", path, err)
	}
	if p.Version != PlanVersion {
		return nil, fmt.Errorf("plan %s: version %d, want %d", path, p.Version, PlanVersion)
	}
	if len(p.Ranks) == 0 {
		return nil, fmt.Errorf("plan %s: no ranks", path)
	}
	return &p, nil
}
