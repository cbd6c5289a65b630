package model

import (
	"errors"
	"fmt"
)

// ErrUnsupported marks a model the package cannot handle (architecture,
// tensor type, feature).
var ErrUnsupported = errors.New("unsupported")

// Config is the architecture of a Llama-family decoder.
type Config struct {
	Arch          string  // "llama", "mistral" or "qwen2"
	Hidden        int     // D, model dimension
	Layers        int     // number of decoder blocks
	Heads         int     // H, query heads
	KVHeads       int     // Hkv, key/value heads (GQA when < Heads)
	HeadDim       int     // Dh
	FFN           int     // F, SwiGLU hidden size
	Vocab         int     // V
	ContextLength int     // trained context length
	RopeBase      float64 // RoPE θ base (default 10000)
	RMSEps        float64 // RMSNorm epsilon
	TiedOutput    bool    // output matrix shares the token embedding
	QKVBias       bool    // q/k/v projections have biases (Qwen2)
}

// KVDim is the width of one token's keys (or values): Hkv·Dh.
func (c Config) KVDim() int { return c.KVHeads * c.HeadDim }

// QDim is the width of one token's queries: H·Dh.
func (c Config) QDim() int { return c.Heads * c.HeadDim }

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
	}
	return nil
}
