package kvcache

import (
	"fmt"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/quant"
)

// Config describes one layer's cache.
type Config struct {
	NKVHeads, HeadDim int
	KRank, VRank      int           // compressed channels of keys and values
	Window            int           // W ≥ 1: tokens kept original
	Mode              kv.WindowMode // block or sliding
	K, V              quant.Spec    // per side; Bits 16 stores fp16 features
}

// KVDim is NKVHeads·HeadDim, the width of one token's keys (and values).
func (c Config) KVDim() int { return c.NKVHeads * c.HeadDim }

// Validate checks the configuration; see the package doc for the supported
// quantisation groups.
func (c Config) Validate() error {
	if c.NKVHeads < 1 || c.HeadDim < 1 {
		return fmt.Errorf("kvcache: %d kv heads of dimension %d", c.NKVHeads, c.HeadDim)
	}
	if c.KRank < 1 || c.VRank < 1 {
		return fmt.Errorf("kvcache: ranks k %d, v %d must be at least 1", c.KRank, c.VRank)
	}
	if c.Window < 1 {
		return fmt.Errorf("kvcache: window %d must be at least 1", c.Window)
	}
	if !c.Mode.Valid() {
		return fmt.Errorf("kvcache: unknown mode %d", int(c.Mode))
	}
	for _, sd := range []struct {
		name string
		rank int
		s    quant.Spec
	}{{"keys", c.KRank, c.K}, {"values", c.VRank, c.V}} {
		if err := sd.s.Validate(); err != nil {
			return fmt.Errorf("kvcache: %s: %w", sd.name, err)
		}
		if !sd.s.Enabled() {
			continue
		}
		switch sd.s.Grouping {
		case quant.PerToken:
			if sd.rank%sd.s.GroupSize != 0 {
				return fmt.Errorf("kvcache: %s: per-token group size %d does not divide rank %d", sd.name, sd.s.GroupSize, sd.rank)
			}
		case quant.PerChannel:
			if c.Window%sd.s.GroupSize != 0 {
				return fmt.Errorf("kvcache: %s: per-channel group size %d does not divide window %d (a compressed token's group must be complete)", sd.name, sd.s.GroupSize, c.Window)
			}
		}
	}
	return nil
}

// groupTokens is the number of tokens that complete one group of a side: G for
// per-channel groups, 1 for per-token groups and for bits 16.
func groupTokens(s quant.Spec) int {
	if s.Enabled() && s.Grouping == quant.PerChannel {
		return s.GroupSize
	}
	return 1
}

// heldOriginals is the number of tokens whose originals a layer holds after n
// appends: those the query at n−1 reads as originals.
func heldOriginals(c Config, n int) int {
	if n == 0 {
		return 0
	}
	return n - c.Mode.OriginalFrom(n-1, c.Window)
}
