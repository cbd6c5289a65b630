package kvcache

import "github.com/cskv/cskv/quant"

// Breakdown is what one layer's cache holds after n tokens, in bytes.
type Breakdown struct {
	Tokens      int   // n
	Originals   int64 // float32 original K and V of the held window tokens: h(n)·D·2·4
	Codes       int64 // bit-packed codes of completed groups (or fp16 features with bits 16), K + V
	ScalesZeros int64 // fp16 scale and zero of every completed group (2 + 2 bytes), K + V
	Pending     int64 // float32 features of tokens whose group is not complete yet, K + V
	Total       int64 // the sum of the above
}

// Bytes is the memory formula of a layer after nTokens appends (the one place
// it is written; AllocatedBytes measures the same thing):
//
//	Total(n) = 8·D·h(n) + Σ_{side ∈ {K, V}} side(n)
//	h(n)     = n − floor((n−1)/W)·W (Block, n ≥ 1), min(n, W) (Sliding), h(0) = 0
//	side(n)  = ceil(n_s·r·b/8) + 4·n_s·r/G + 4·r·(n − n_s)   for b ∈ {2, 3, 4, 8}
//	side(n)  = 2·r·n                                         for b = 16
//
// with r the side's rank, b its bits, G its group size and n_s the completed
// prefix: n_s = n for per-token groups, G·floor(n/G) for per-channel groups.
// (n_s·r/G counts the groups either way: G channels of one token, or one
// channel of G tokens.)
func Bytes(c Config, nTokens int) Breakdown {
	n := nTokens
	b := Breakdown{Tokens: n, Originals: 8 * int64(c.KVDim()) * int64(heldOriginals(c, n))}
	for _, sd := range []struct {
		rank int
		s    quant.Spec
	}{{c.KRank, c.K}, {c.VRank, c.V}} {
		r := int64(sd.rank)
		if !sd.s.Enabled() {
			b.Codes += 2 * r * int64(n)
			continue
		}
		g := groupTokens(sd.s)
		ns := int64(n / g * g)
		b.Codes += (ns*r*int64(sd.s.Bits) + 7) / 8
		b.ScalesZeros += 4 * ns * r / int64(sd.s.GroupSize)
		b.Pending += 4 * r * (int64(n) - ns)
	}
	b.Total = b.Originals + b.Codes + b.ScalesZeros + b.Pending
	return b
}

// PerTokenBaseline is the fp16 cache cost of one token in one layer without
// compression: K and V, kvDim each, 2 bytes per number.
func PerTokenBaseline(kvDim int) int64 { return 2 * int64(kvDim) * 2 }

// Ratio is the fp16 baseline's bytes over the compressed cache's bytes after
// nTokens (how many times smaller the cache is); 0 when nTokens < 1.
func Ratio(c Config, nTokens int) float64 {
	if nTokens < 1 {
		return 0
	}
	return float64(int64(nTokens)*PerTokenBaseline(c.KVDim())) / float64(Bytes(c, nTokens).Total)
}
