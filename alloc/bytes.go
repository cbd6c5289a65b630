package alloc

import (
	"fmt"
	"math"

	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/quant"
)

// UnitTokens is the number of tokens the byte costs are counted over: the
// least common multiple of the sides' group lengths in tokens (the per-channel
// group size, 1 for per-token groups and fp16), so that every group of the
// compressed branch is complete and the costs are whole bytes.
func UnitTokens(specs ...quant.Spec) int {
	u := 1
	for _, s := range specs {
		if s.Enabled() && s.Grouping == quant.PerChannel && s.GroupSize > 0 {
			u = lcm(u, s.GroupSize)
		}
	}
	return u
}

// SideBytes is what one side of one layer's compressed branch holds for
// `tokens` tokens at rank r with spec s: codes (or fp16 features), scales
// and zeros, and features waiting for their group, from the memory formula
// kvcache.Bytes (docs/METHOD.md §5). The full-precision window is not part
// of it: it is the same for every plan.
func SideBytes(nKVHeads, headDim, rank int, s quant.Spec, tokens int) int64 {
	c := kvcache.Config{NKVHeads: nKVHeads, HeadDim: headDim, KRank: rank, K: s, V: quant.Spec{Bits: quant.Off}, Window: 1}
	b := kvcache.Bytes(c, tokens)
	return b.Codes + b.ScalesZeros + b.Pending
}

// BaselineBytes is the fp16 cache of `tokens` tokens over all layers: the
// denominator of a budget.
func BaselineBytes(layers, kvDim, tokens int) int64 {
	return int64(layers) * int64(tokens) * kvcache.PerTokenBaseline(kvDim)
}

// BudgetBytes turns a budget fraction of the fp16 cache into bytes of
// `tokens` tokens over all layers (rounded down; a fraction that is exact in
// binary, like 0.25, gives exact bytes).
func BudgetBytes(fraction float64, layers, kvDim, tokens int) (int64, error) {
	if !(fraction > 0 && fraction <= 1) {
		return 0, fmt.Errorf("budget %v outside (0, 1]", fraction)
	}
	base := float64(BaselineBytes(layers, kvDim, tokens))
	return int64(math.Floor(fraction*base*(1+1e-12) + 1e-9)), nil
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	if a < 0 {
		return -a
	}
	return a
}

func lcm(a, b int) int { return a / int(gcd(int64(a), int64(b))) * b }
