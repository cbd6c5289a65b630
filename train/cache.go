package train

import (
	"fmt"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
)

// Cache is the compressed cache an evaluation reads (docs/METHOD.md §4, §5):
// the bi-branch window and rule and the quantisation of the features, as
// the flags of eval, generate, memory and a run's report give them.
type Cache struct {
	Window       int           // --window: W, tokens kept at full precision
	Mode         kv.WindowMode // --window-mode: block or sliding
	KBits, VBits int           // --k-bits, --v-bits: 2, 3, 4, 8; 16 = off
	KQuant       KeyQuant      // --k-quant: keys per channel (KIVI) or per token
	QuantWindow  int           // --quant-window: tokens per per-channel key group
	QuantZero    ZeroPoint     // --quant-zero: free or clamp
}

// Cache is the cache of the run's quantisation settings with window W.
func (c Config) Cache(window int) Cache {
	return Cache{Window: window, Mode: c.Window, KBits: c.KBits, VBits: c.VBits,
		KQuant: c.KQuant, QuantWindow: c.QuantWindow, QuantZero: c.QuantZero}
}

// Check checks the settings, naming the flag and value at fault.
func (c Cache) Check() error {
	switch {
	case !c.Mode.Valid():
		return fmt.Errorf("--window-mode %d: want block or sliding", int(c.Mode))
	case c.Window < 0:
		return fmt.Errorf("--window %d: must be ≥ 0", c.Window)
	case c.KQuant.Check() != nil:
		return c.KQuant.Check()
	case c.QuantZero.Check() != nil:
		return c.QuantZero.Check()
	case c.QuantWindow < 1:
		return fmt.Errorf("--quant-window %d: must be a positive integer", c.QuantWindow)
	case c.KBits != 16 && c.KQuant == KeyPerChannel && c.Window > 0 && c.Window%c.QuantWindow != 0:
		// The real cache compresses a key group only when all of it has left
		// the window, so per-channel (KIVI) groups must tile W.
		return fmt.Errorf("--window %d is not a multiple of --quant-window %d (per-channel key groups must tile the window)", c.Window, c.QuantWindow)
	case c.KBits == 0 || c.VBits == 0: // kv.Quant reads 0 as off; the flags spell off 16
		return fmt.Errorf("--k-bits %d, --v-bits %d: want 2, 3, 4, 8 or 16", c.KBits, c.VBits)
	}
	return nil
}

// Settings checks c and returns the cache for keys and values of ranks
// kRank, vRank of a model of configuration mc.
func (c Cache) Settings(mc model.Config, kRank, vRank int) (kvcache.Settings, error) {
	if err := c.Check(); err != nil {
		return kvcache.Settings{}, err
	}
	k, v, err := c.quant().Specs(kRank, vRank, mc.KVHeads)
	if err != nil {
		return kvcache.Settings{}, err
	}
	return kvcache.Settings{Window: c.Window, Mode: c.Mode, K: k, V: v}, nil
}

// quant is the quantisation of the compressed features that c describes.
func (c Cache) quant() kv.Quant {
	return kv.Quant{KBits: c.KBits, VBits: c.VBits, KPerChannel: c.KQuant == KeyPerChannel,
		QuantWindow: c.QuantWindow, ClampZero: c.QuantZero == ZeroClamp}
}
