package model

import (
	"fmt"
	"math"
)

// RopeScaling is a checkpoint's rotary-frequency scaling, as read from a
// Hugging Face config (rope_scaling or rope_parameters) or from GGUF
// metadata ({arch}.rope.scaling.*) and the rope_freqs.weight tensor. The zero
// value is the plain RoPE of θ = Config.RopeBase.
type RopeScaling struct {
	Type            string    // a key of ropeTypes: "default", "linear", "llama3", "yarn" or "freqs"
	Factor          float64   // linear, llama3, yarn: the context extension factor
	LowFreqFactor   float64   // llama3
	HighFreqFactor  float64   // llama3
	OriginalContext int       // llama3, yarn: original_max_position_embeddings (L)
	AttentionFactor float64   // yarn: explicit attention_factor; 0 derives it from Factor and the mscales
	Mscale          float64   // yarn: mscale (0 = unset)
	MscaleAllDim    float64   // yarn: mscale_all_dim (0 = unset)
	BetaFast        float64   // yarn: fast correction boundary in rotations (default 32)
	BetaSlow        float64   // yarn: slow correction boundary (default 1)
	NoTruncate      bool      // yarn: truncate false (correction range not rounded to integers)
	Divisors        []float32 // freqs: GGUF rope_freqs.weight, one divisor of each pair's angle (Dh/2)
}

// Rope is the rotary embedding every attention in cskv applies: the query
// and key pairs (i, i+Dh/2) of every head at position p are rotated by the
// angle p·InvFreq[i], and both cos and sin are multiplied by
// AttentionFactor (YaRN's mscale, so attention logits scale by its square).
type Rope struct {
	InvFreq         []float64 // (Dh/2) inverse frequencies after scaling
	AttentionFactor float64   // 1 unless YaRN
}

// ropeType is one row of the scaling table: how a type's inverse frequencies
// and attention factor are computed, or why it is refused.
type ropeType struct {
	compute func(s RopeScaling, base float64, dh, context int) (Rope, error)
	refused string // non-empty: cskv does not implement this type, and why
}

// ropeTypes is the table of rotary scalings. Hugging Face's names are the
// keys; "freqs" is the GGUF rope_freqs.weight form of llama3.
var ropeTypes = map[string]ropeType{
	"default":  {compute: ropeDefault},
	"linear":   {compute: ropeLinear},
	"llama3":   {compute: ropeLlama3},
	"yarn":     {compute: ropeYarn},
	"freqs":    {compute: ropeFreqs},
	"dynamic":  {refused: "dynamic NTK scaling changes the frequencies with the sequence length"},
	"longrope": {refused: "LongRoPE's per-pair factors switch with the sequence length"},
	"su":       {refused: "su is LongRoPE under its old name"},
	"mrope":    {refused: "multimodal RoPE needs position ids per modality"},
}

// Rope computes the inverse frequencies and attention factor of a head of
// dimension dh with base θ under the scaling s. context is the model's
// max_position_embeddings (YaRN's L when the scaling gives none).
func (s RopeScaling) Rope(base float64, dh, context int) (Rope, error) {
	name := s.Type
	if name == "" {
		name = "default"
	}
	rt, ok := ropeTypes[name]
	switch {
	case !ok:
		return Rope{}, fmt.Errorf("rope scaling type %q: %w (cskv implements default, linear, llama3, yarn)", name, ErrUnsupported)
	case rt.refused != "":
		return Rope{}, fmt.Errorf("rope scaling type %q: %w (%s)", name, ErrUnsupported, rt.refused)
	case dh <= 0 || dh%2 != 0:
		return Rope{}, fmt.Errorf("rope: head dim %d must be positive and even", dh)
	case !(base > 0):
		return Rope{}, fmt.Errorf("rope: base %g must be positive", base)
	}
	return rt.compute(s, base, dh, context)
}

// baseInvFreq is 1/θ^(2i/dh) with the exponent rounded to float32, as
// transformers computes arange(0, dh, 2).float()/dh.
func baseInvFreq(base float64, dh int) []float64 {
	inv := make([]float64, dh/2)
	for i := range inv {
		e := float32(2*i) / float32(dh)
		inv[i] = math.Pow(base, -float64(e))
	}
	return inv
}

func ropeDefault(_ RopeScaling, base float64, dh, _ int) (Rope, error) {
	return Rope{InvFreq: baseInvFreq(base, dh), AttentionFactor: 1}, nil
}

func ropeLinear(s RopeScaling, base float64, dh, _ int) (Rope, error) {
	if !(s.Factor > 0) {
		return Rope{}, fmt.Errorf("rope scaling linear: factor %g must be positive", s.Factor)
	}
	inv := baseInvFreq(base, dh)
	for i := range inv {
		inv[i] /= s.Factor
	}
	return Rope{InvFreq: inv, AttentionFactor: 1}, nil
}

// ropeLlama3 divides the low frequencies (wavelength > L/low_freq_factor) by
// the factor, keeps the high ones (wavelength < L/high_freq_factor) and
// interpolates smoothly between; both band edges belong to the smooth part.
func ropeLlama3(s RopeScaling, base float64, dh, _ int) (Rope, error) {
	switch {
	case !(s.Factor > 0):
		return Rope{}, fmt.Errorf("rope scaling llama3: factor %g must be positive", s.Factor)
	case !(s.LowFreqFactor > 0) || !(s.HighFreqFactor > s.LowFreqFactor):
		return Rope{}, fmt.Errorf("rope scaling llama3: low_freq_factor %g and high_freq_factor %g must satisfy 0 < low < high", s.LowFreqFactor, s.HighFreqFactor)
	case s.OriginalContext <= 0:
		return Rope{}, fmt.Errorf("rope scaling llama3: original_max_position_embeddings %d must be positive", s.OriginalContext)
	}
	L := float64(s.OriginalContext)
	lowWave, highWave := L/s.LowFreqFactor, L/s.HighFreqFactor
	inv := baseInvFreq(base, dh)
	for i, f := range inv {
		wave := 2 * math.Pi / f
		switch {
		case wave > lowWave:
			inv[i] = f / s.Factor
		case wave < highWave:
		default:
			sm := (L/wave - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
			inv[i] = (1-sm)*f/s.Factor + sm*f
		}
	}
	return Rope{InvFreq: inv, AttentionFactor: 1}, nil
}

// yarnMscale is YaRN's get_mscale: 0.1·m·ln(factor) + 1 for factor > 1.
func yarnMscale(factor, m float64) float64 {
	if factor <= 1 {
		return 1
	}
	return 0.1*m*math.Log(factor) + 1
}

// ropeYarn blends interpolated (inv/factor) and extrapolated (inv) frequencies
// with a linear ramp over the correction range of the pairs that turn between
// beta_fast and beta_slow times within L; L is original_max_position_embeddings
// when given, else the model's context.
func ropeYarn(s RopeScaling, base float64, dh, context int) (Rope, error) {
	if !(s.Factor > 0) {
		return Rope{}, fmt.Errorf("rope scaling yarn: factor %g must be positive", s.Factor)
	}
	L := s.OriginalContext
	if L <= 0 {
		L = context
	}
	if L <= 0 {
		return Rope{}, fmt.Errorf("rope scaling yarn: no original_max_position_embeddings and no max_position_embeddings")
	}
	af := s.AttentionFactor
	if af == 0 {
		if s.Mscale != 0 && s.MscaleAllDim != 0 {
			af = yarnMscale(s.Factor, s.Mscale) / yarnMscale(s.Factor, s.MscaleAllDim)
		} else {
			af = yarnMscale(s.Factor, 1)
		}
	}
	fast, slow := s.BetaFast, s.BetaSlow
	if fast == 0 {
		fast = 32
	}
	if slow == 0 {
		slow = 1
	}
	d := float64(dh)
	corr := func(rot float64) float64 {
		return d * math.Log(float64(L)/(rot*2*math.Pi)) / (2 * math.Log(base))
	}
	low, high := corr(fast), corr(slow)
	if !s.NoTruncate {
		low, high = math.Floor(low), math.Ceil(high)
	}
	low, high = max(low, 0), min(high, d-1)
	if low == high {
		high += 0.001
	}
	inv := baseInvFreq(base, dh)
	for i, f := range inv {
		// ramp is computed in float32, as transformers' linear_ramp_factor is
		ramp := float64(min(max((float32(i)-float32(low))/(float32(high)-float32(low)), 0), 1))
		inv[i] = f/s.Factor*ramp + f*(1-ramp)
	}
	return Rope{InvFreq: inv, AttentionFactor: af}, nil
}

// ropeFreqs divides each pair's angle by its GGUF rope_freqs.weight entry
// (llama.cpp's form of llama3 scaling).
func ropeFreqs(s RopeScaling, base float64, dh, _ int) (Rope, error) {
	if len(s.Divisors) != dh/2 {
		return Rope{}, fmt.Errorf("rope_freqs.weight has %d entries, want head dim / 2 = %d", len(s.Divisors), dh/2)
	}
	inv := baseInvFreq(base, dh)
	for i, dv := range s.Divisors {
		if !(dv > 0) || math.IsInf(float64(dv), 0) {
			return Rope{}, fmt.Errorf("rope_freqs.weight[%d] = %g must be positive and finite", i, dv)
		}
		inv[i] /= float64(dv)
	}
	return Rope{InvFreq: inv, AttentionFactor: 1}, nil
}

// Describe is one line for `cskv inspect`: the scaling in effect.
func (s RopeScaling) Describe() string {
	switch s.Type {
	case "", "default":
		return "none (default)"
	case "linear":
		return fmt.Sprintf("linear, factor %g", s.Factor)
	case "llama3":
		return fmt.Sprintf("llama3, factor %g, low_freq_factor %g, high_freq_factor %g, original context %d", s.Factor, s.LowFreqFactor, s.HighFreqFactor, s.OriginalContext)
	case "yarn":
		ctx := "the model's context"
		if s.OriginalContext > 0 {
			ctx = fmt.Sprint(s.OriginalContext)
		}
		return fmt.Sprintf("yarn, factor %g, original context %s", s.Factor, ctx)
	case "freqs":
		return fmt.Sprintf("GGUF rope_freqs.weight divisors %v", s.Divisors)
	}
	return s.Type
}

// RopeTable holds the rotation of every position [0, T) and head-dim pair,
// AttentionFactor included.
type RopeTable struct {
	Cos, Sin []float32 // (T, Dh/2)
	half     int
}

// NewRopeTable computes the rotation table of r for T positions.
func NewRopeTable(T int, r Rope) *RopeTable {
	half := len(r.InvFreq)
	t := &RopeTable{Cos: make([]float32, T*half), Sin: make([]float32, T*half), half: half}
	af := r.AttentionFactor
	if af == 0 {
		af = 1
	}
	for p := 0; p < T; p++ {
		for i, f := range r.InvFreq {
			a := float64(p) * f
			t.Cos[p*half+i] = float32(math.Cos(a) * af)
			t.Sin[p*half+i] = float32(math.Sin(a) * af)
		}
	}
	return t
}

// Apply rotates x (T, heads·Dh) in place, row t at position pos0+t.
func (r *RopeTable) Apply(x []float32, T, heads, pos0 int) {
	half := r.half
	dh := 2 * half
	splitRows(T, heads*dh, func(t0, t1 int) {
		for t := t0; t < t1; t++ {
			cs := r.Cos[(pos0+t)*half : (pos0+t+1)*half]
			sn := r.Sin[(pos0+t)*half : (pos0+t+1)*half]
			row := x[t*heads*dh : (t+1)*heads*dh]
			for h := 0; h < heads; h++ {
				v := row[h*dh : (h+1)*dh]
				for i := 0; i < half; i++ {
					a, b := v[i], v[i+half]
					v[i] = a*cs[i] - b*sn[i]
					v[i+half] = b*cs[i] + a*sn[i]
				}
			}
		}
	})
}

// llama3Standard is the llama3 scaling every Llama-3.x release uses apart
// from its factor; rope_freqs.weight is matched against it when a GGUF is
// converted to a config.json.
var llama3Standard = RopeScaling{Type: "llama3", LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}

// hfJSON is the rope_scaling object of a config.json that makes transformers
// compute the same frequencies (nil for plain RoPE). GGUF rope_freqs divisors
// are written as the llama3 scaling they equal (checked to 1e-6 relative),
// or refused when they equal none.
func (s RopeScaling) hfJSON(base float64, dh int) (any, error) {
	switch s.Type {
	case "", "default":
		return nil, nil
	case "linear":
		return map[string]any{"rope_type": "linear", "factor": s.Factor}, nil
	case "llama3":
		return map[string]any{"rope_type": "llama3", "factor": s.Factor, "low_freq_factor": s.LowFreqFactor,
			"high_freq_factor": s.HighFreqFactor, "original_max_position_embeddings": s.OriginalContext}, nil
	case "yarn":
		out := map[string]any{"rope_type": "yarn", "factor": s.Factor}
		if s.OriginalContext > 0 {
			out["original_max_position_embeddings"] = s.OriginalContext
		}
		for k, v := range map[string]float64{"attention_factor": s.AttentionFactor, "mscale": s.Mscale, "mscale_all_dim": s.MscaleAllDim, "beta_fast": s.BetaFast, "beta_slow": s.BetaSlow} {
			if v != 0 {
				out[k] = v
			}
		}
		if s.NoTruncate {
			out["truncate"] = false
		}
		return out, nil
	case "freqs":
		got, err := s.Rope(base, dh, 0)
		if err != nil {
			return nil, err
		}
		l3 := llama3Standard
		for _, d := range s.Divisors {
			l3.Factor = max(l3.Factor, float64(d))
		}
		want, err := l3.Rope(base, dh, 0)
		if err == nil && sameFreqs(got.InvFreq, want.InvFreq, 1e-6) {
			return l3.hfJSON(base, dh)
		}
		return nil, fmt.Errorf("rope_freqs.weight %v equals no llama3 scaling of factor %g (low 1, high 4, original context 8192): %w", s.Divisors, l3.Factor, ErrUnsupported)
	}
	return nil, fmt.Errorf("rope scaling %q: %w", s.Type, ErrUnsupported)
}

func sameFreqs(a, b []float64, rel float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > rel*math.Abs(b[i]) {
			return false
		}
	}
	return true
}
