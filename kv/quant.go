package kv

import (
	"fmt"

	"github.com/cskv/cskv/quant"
)

// Quant is the quantisation of the compressed features Ck = X·Akᵀ and
// Cv = X·Avᵀ (docs/METHOD.md §4), the same setting for quantisation-aware
// training and for the cache: values in per-token groups of one head's
// compressed channels; keys per channel over QuantWindow tokens (KIVI) or per
// token like values.
type Quant struct {
	KBits, VBits int  // 2, 3, 4 or 8; 16 = off (0, the zero value, is off too)
	KPerChannel  bool // keys: KIVI per-channel groups of QuantWindow tokens; else per-token groups of Rk/Hkv channels
	QuantWindow  int  // tokens per per-channel key group
	ClampZero    bool // clamp the zero point to [0, 2^b − 1] as the reference code does
}

// Specs returns the rules of package quant for keys and values of ranks rk,
// rv with kvHeads key/value heads, checked with quant.Spec.Validate.
func (q Quant) Specs(rk, rv, kvHeads int) (k, v quant.Spec, err error) {
	kBits, vBits := bitsOrOff(q.KBits), bitsOrOff(q.VBits)
	// headGroup is one head's compressed channels: the per-token group.
	headGroup := func(side string, rank, bits int) (int, error) {
		switch {
		case rank%kvHeads == 0:
			return rank / kvHeads, nil
		case bits == quant.Off:
			return rank, nil // unquantised: the group size is never used
		}
		return 0, fmt.Errorf("%s rank %d is not a multiple of the %d kv heads (per-token quantisation groups are one head's channels)", side, rank, kvHeads)
	}
	tokenBits := kBits // bits of the keys' per-token groups
	if q.KPerChannel {
		tokenBits = quant.Off // per-channel groups do not depend on the rank
	}
	kg, err := headGroup("key", rk, tokenBits)
	if err != nil {
		return k, v, err
	}
	vg, err := headGroup("value", rv, vBits)
	if err != nil {
		return k, v, err
	}
	k = quant.Spec{Bits: kBits, Grouping: quant.PerToken, GroupSize: kg, ClampZero: q.ClampZero}
	if q.KPerChannel {
		k.Grouping, k.GroupSize = quant.PerChannel, q.QuantWindow
	}
	v = quant.Spec{Bits: vBits, Grouping: quant.PerToken, GroupSize: vg, ClampZero: q.ClampZero}
	if err := k.Validate(); err != nil {
		return k, v, fmt.Errorf("keys: %w", err)
	}
	if err := v.Validate(); err != nil {
		return k, v, fmt.Errorf("values: %w", err)
	}
	return k, v, nil
}

// bitsOrOff maps the zero value to quant.Off.
func bitsOrOff(b int) int {
	if b == 0 {
		return quant.Off
	}
	return b
}
