package model

import (
	"errors"
	"fmt"
	"github.com/cskv/cskv/linalg"
	"math"
)

// ErrUnsupported marks a model the package cannot handle (architecture,
// tensor type, feature).
var ErrUnsupported = errors.New("unsupported")

// Config is the architecture of a decoder of one of the families in the
// families table. The zero values of the fields after TiedOutput are plain
// Llama behaviour.
type Config struct {
	Arch          string      // a key of families: "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2"
	Hidden        int         // D, model dimension
	Layers        int         // number of decoder blocks
	Heads         int         // H, query heads
	KVHeads       int         // Hkv, key/value heads (GQA when < Heads)
	HeadDim       int         // Dh (H·Dh may differ from D: Qwen3)
	FFN           int         // F, gated-MLP hidden size
	Vocab         int         // V
	ContextLength int         // trained context length (max_position_embeddings)
	RopeBase      float64     // RoPE θ base (default 10000)
	RopeScaling   RopeScaling // rotary frequency scaling (zero: none)
	RMSEps        float64     // RMSNorm epsilon
	TiedOutput    bool        // output matrix shares the token embedding
	QKVBias       bool        // q/k/v projections have biases (Qwen2)

	Activation    string  // MLP gate activation, a key of activations ("" = silu)
	EmbedScale    float32 // token embeddings are multiplied by it (Gemma-2: √D as the weights' dtype rounds it); 0 = 1
	QueryScalar   float64 // attention scale is QueryScalar^-½ (Gemma-2 query_pre_attn_scalar); 0 = Dh
	AttnSoftCap   float64 // attention scores s → c·tanh(s/c) before the mask (Gemma-2); 0 = off
	FinalSoftCap  float64 // output logits z → c·tanh(z/c) (Gemma-2); 0 = off
	SlidingWindow int     // the config's sliding_window (0 = none); Windows says which layers use it
	Windows       []int   // (Layers) per-layer window: query i sees key j iff i − j < w; 0 or nil = every earlier key
}

// KVDim is the width of one token's keys (or values): Hkv·Dh.
func (c Config) KVDim() int { return c.KVHeads * c.HeadDim }

// QDim is the width of one token's queries: H·Dh.
func (c Config) QDim() int { return c.Heads * c.HeadDim }

// Rope is the rotary embedding in effect: the scaled inverse frequencies and
// the attention factor, from the one table every path uses (ropeTypes).
func (c Config) Rope() (Rope, error) {
	return c.RopeScaling.Rope(c.RopeBase, c.HeadDim, c.ContextLength)
}

// Window is layer l's sliding window (0 = global).
func (c Config) Window(l int) int {
	if l < len(c.Windows) {
		return c.Windows[l]
	}
	return 0
}

// Attention is layer l's attention rule without its weights (Block.Attn adds
// the q/k norm weights).
func (c Config) Attention(l int) (Attention, error) {
	r, err := c.Rope()
	if err != nil {
		return Attention{}, err
	}
	qs := c.QueryScalar
	if qs == 0 {
		qs = float64(c.HeadDim)
	}
	return Attention{
		Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim, Rope: r,
		Scale: float32(1 / math.Sqrt(qs)), SoftCap: float32(c.AttnSoftCap), Window: c.Window(l), NormEps: c.RMSEps,
	}, nil
}

// Validate checks the configuration for internal consistency.
func (c Config) Validate() error {
	switch {
	case c.Hidden <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.HeadDim <= 0 || c.FFN <= 0 || c.Vocab <= 0:
		return fmt.Errorf("config: non-positive size in %+v", c)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("config: %d heads not a multiple of %d kv heads", c.Heads, c.KVHeads)
	case c.HeadDim%2 != 0:
		return fmt.Errorf("config: head dim %d is odd (RoPE needs pairs)", c.HeadDim)
	case c.RMSEps <= 0:
		return fmt.Errorf("config: rms epsilon %g must be positive", c.RMSEps)
	case c.RopeBase <= 0:
		return fmt.Errorf("config: rope base %g must be positive", c.RopeBase)
	case c.Windows != nil && len(c.Windows) != c.Layers:
		return fmt.Errorf("config: %d sliding windows for %d layers", len(c.Windows), c.Layers)
	case c.QueryScalar < 0 || c.AttnSoftCap < 0 || c.FinalSoftCap < 0:
		return fmt.Errorf("config: query scalar %g, soft caps %g / %g must not be negative", c.QueryScalar, c.AttnSoftCap, c.FinalSoftCap)
	}
	if _, ok := activations[c.Activation]; !ok {
		return fmt.Errorf("config: activation %q: %w", c.Activation, ErrUnsupported)
	}
	if _, err := c.Rope(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// gateAct is an MLP gate activation: f per element and, when set, wide
// sets g = f(g)·u for wide layers (hidden ≥ wideHidden) in vector
// instructions, with other bits than f (so narrow models keep theirs).
type gateAct struct {
	f    func(x float32) float32
	wide func(g, u []float32)
}

// activations is the table of MLP gate activations.
var activations = map[string]gateAct{
	"":     {silu, linalg.SiLUGate},
	"silu": {silu, linalg.SiLUGate},
	// gelu_tanh is 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
	"gelu_tanh": {f: func(x float32) float32 {
		v := float64(x)
		return float32(0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v))))
	}},
}

// wideHidden is the width from which a layer takes the wide paths: its
// gate in vector instructions (gateAct.wide), as attention tiles stack
// their heads from attn's stackWidth (1024) on.
const wideHidden = 1024

func silu(x float32) float32 { return x / (1 + float32(math.Exp(float64(-x)))) }

// activationNames are the config.json spellings of each activation.
var activationNames = map[string][]string{
	"silu":      {"silu", "swish"},
	"gelu_tanh": {"gelu_pytorch_tanh", "gelu_tanh"},
}
