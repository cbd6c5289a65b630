package eval

import (
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
)

// MemRow is the cache memory of one setting at one context length, per
// layer (the memory formula of docs/METHOD.md §5).
type MemRow struct {
	Context          int     `json:"context"`
	BaselinePerToken float64 `json:"baseline_bytes_per_token"` // fp16 K and V
	CachePerToken    float64 `json:"cache_bytes_per_token"`    // compressed branch + window, amortised
	CodesPerToken    float64 `json:"codes_bytes_per_token"`    // packed codes (or fp16 features)
	ScalesPerToken   float64 `json:"scales_zeros_bytes_per_token"`
	WindowBytes      int64   `json:"window_bytes"` // originals + pending features held at this length
	Ratio            float64 `json:"compression_ratio"`
	Removed          float64 `json:"removed_fraction"` // 1 − cache/baseline
}

// MemoryTable evaluates the memory formula at the given context lengths. The
// real cache keeps at least one token original, so s.Window = 0 (every token
// compressed, an evaluation setting) has no table: nil.
func MemoryTable(mc model.Config, kRank, vRank int, s kvcache.Settings, contexts ...int) ([]MemRow, error) {
	if s.Window == 0 {
		return nil, nil
	}
	cc := s.Layer(mc.KVHeads, mc.HeadDim, kRank, vRank)
	if err := cc.Validate(); err != nil {
		return nil, err
	}
	var rows []MemRow
	for _, n := range contexts {
		b := kvcache.Bytes(cc, n)
		base := kvcache.PerTokenBaseline(mc.KVDim())
		fn := float64(n)
		rows = append(rows, MemRow{
			Context: n, BaselinePerToken: float64(base), CachePerToken: float64(b.Total) / fn,
			CodesPerToken: float64(b.Codes) / fn, ScalesPerToken: float64(b.ScalesZeros) / fn,
			WindowBytes: b.Originals + b.Pending, Ratio: kvcache.Ratio(cc, n),
			Removed: 1 - float64(b.Total)/(fn*float64(base)),
		})
	}
	return rows, nil
}
