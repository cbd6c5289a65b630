package eval

import (
	"fmt"

	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// MemRow is the cache memory of one setting at one context length, per
// layer (the memory formula of docs/METHOD.md §5); with ranks that differ
// between layers, the mean over the layers.
type MemRow struct {
	Context          int     `json:"context"`
	BaselinePerToken float64 `json:"baseline_bytes_per_token"` // fp16 K and V
	CachePerToken    float64 `json:"cache_bytes_per_token"`    // compressed branch + window, amortised
	CodesPerToken    float64 `json:"codes_bytes_per_token"`    // packed codes (or fp16 features)
	ScalesPerToken   float64 `json:"scales_zeros_bytes_per_token"`
	WindowBytes      int64   `json:"window_bytes"` // originals + pending features held at this length
	Ratio            float64 `json:"compression_ratio"`
	Removed          float64 `json:"removed_fraction"` // 1 − cache/baseline
	TotalBytes       int64   `json:"total_bytes"`      // the whole cache, all layers, at this length
}

// MemoryTable evaluates the memory formula at the given context lengths for
// layers of ranks kRanks[l], vRanks[l] (one entry per layer of the model).
// The real cache keeps at least one token original, so s.Window = 0 (every
// token compressed, an evaluation setting) has no table: nil.
func MemoryTable(mc model.Config, kRanks, vRanks []int, s kvcache.Settings, contexts ...int) ([]MemRow, error) {
	if s.Window == 0 {
		return nil, nil
	}
	if len(kRanks) != mc.Layers || len(vRanks) != mc.Layers {
		return nil, fmt.Errorf("memory table: %d key and %d value ranks for %d layers", len(kRanks), len(vRanks), mc.Layers)
	}
	var ccs []kvcache.Config
	for l := range kRanks {
		ls, err := s.ForRanks(kRanks[l], vRanks[l], mc.KVHeads)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", l, err)
		}
		cc := ls.Layer(mc.KVHeads, mc.HeadDim, kRanks[l], vRanks[l])
		if err := cc.Validate(); err != nil {
			return nil, fmt.Errorf("layer %d: %w", l, err)
		}
		ccs = append(ccs, cc)
	}
	var rows []MemRow
	base := kvcache.PerTokenBaseline(mc.KVDim())
	for _, n := range contexts {
		var b kvcache.Breakdown
		for _, cc := range ccs {
			lb := kvcache.Bytes(cc, n)
			b.Originals += lb.Originals
			b.Codes += lb.Codes
			b.ScalesZeros += lb.ScalesZeros
			b.Pending += lb.Pending
			b.Total += lb.Total
		}
		fn := float64(n) * float64(len(ccs)) // token-layers
		rows = append(rows, MemRow{
			Context: n, BaselinePerToken: float64(base), CachePerToken: float64(b.Total) / fn,
			CodesPerToken: float64(b.Codes) / fn, ScalesPerToken: float64(b.ScalesZeros) / fn,
			WindowBytes: (b.Originals + b.Pending) / int64(len(ccs)), Ratio: fn * float64(base) / float64(b.Total),
			Removed: 1 - float64(b.Total)/(fn*float64(base)), TotalBytes: b.Total,
		})
	}
	return rows, nil
}

// Uniform is n copies of rank: every layer at the same rank.
func Uniform(rank, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = rank
	}
	return out
}

// MemoryEntry is one setting of a memory sweep: uniform ranks from a
// density, or a plan's ranks per layer, at one bit width.
type MemoryEntry struct {
	Density float64 `json:"density"` // 0 for a plan
	KRank   int     `json:"k_rank"`  // 0 for a plan
	VRank   int     `json:"v_rank"`  // 0 for a plan
	Bits    int     `json:"bits"`
	KRanks  []int   `json:"k_ranks,omitempty"` // a plan's ranks per layer
	VRanks  []int   `json:"v_ranks,omitempty"`
	MemRow
}

// MemorySweep is the memory formula at context tokens for every density ×
// bit width (keys and values alike: rank train.RankFromDensity, bits on
// both sides) under the window, rule and key groups of cache.
func MemorySweep(mc model.Config, cache train.Cache, densities []float64, bits []int, context int) ([]MemoryEntry, error) {
	var rows []MemoryEntry
	for _, d := range densities {
		r, err := train.RankFromDensity(d, mc.HeadDim, mc.KVHeads)
		if err != nil {
			return nil, fmt.Errorf("--densities: %w", err)
		}
		for _, b := range bits {
			cache.KBits, cache.VBits = b, b
			mr, err := memoryRow(mc, Uniform(r, mc.Layers), Uniform(r, mc.Layers), cache, context)
			if err != nil {
				return nil, err
			}
			rows = append(rows, MemoryEntry{Density: d, KRank: r, VRank: r, Bits: b, MemRow: mr})
		}
	}
	return rows, nil
}

// PlanMemory is the memory formula at context tokens for the ranks per
// layer kRanks, vRanks (a plan's) at each (key, value) bit width, under
// cache; an entry's Bits are the value bits.
func PlanMemory(mc model.Config, kRanks, vRanks []int, cache train.Cache, bits [][2]int, context int) ([]MemoryEntry, error) {
	var rows []MemoryEntry
	for _, kb := range bits {
		cache.KBits, cache.VBits = kb[0], kb[1]
		mr, err := memoryRow(mc, kRanks, vRanks, cache, context)
		if err != nil {
			return nil, err
		}
		rows = append(rows, MemoryEntry{Bits: kb[1], KRanks: kRanks, VRanks: vRanks, MemRow: mr})
	}
	return rows, nil
}

// memoryRow is the memory formula of one setting at context tokens; the
// cache settings are those of the first layer's ranks.
func memoryRow(mc model.Config, kRanks, vRanks []int, cache train.Cache, context int) (MemRow, error) {
	if cache.Window == 0 {
		return MemRow{}, fmt.Errorf("--window 0: the real cache keeps W ≥ 1 tokens original")
	}
	s, err := cache.Settings(mc, kRanks[0], vRanks[0])
	if err != nil {
		return MemRow{}, err
	}
	mr, err := MemoryTable(mc, kRanks, vRanks, s, context)
	if err != nil {
		return MemRow{}, err
	}
	return mr[0], nil
}
