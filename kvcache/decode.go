package kvcache

import (
	"fmt"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

// cacheLayer adapts a real bi-branch cache (Layer) to model.Decoder:
// it computes the compressed features Ck = x·Akᵀ, Cv = x·Avᵀ of each new
// token from its attention input.
type cacheLayer struct {
	l      *Layer
	ak, av []float32 // (rk, D), (rv, D)
	ck, cv []float32 // (rk), (rv) scratch
	hidden int
}

func (c *cacheLayer) Append(k, v, x []float32) error {
	linalg.MatMulT(c.ck, x, c.ak, 1, len(c.ck), c.hidden, false)
	linalg.MatMulT(c.cv, x, c.av, 1, len(c.cv), c.hidden, false)
	return c.l.Append(k, v, c.ck, c.cv)
}
func (c *cacheLayer) KV(keys, values []float32) error { return c.l.KV(keys, values) }
func (c *cacheLayer) Len() int                        { return c.l.Len() }

// NewCaches builds one real bi-branch cache per layer for decoding with the
// projections under s (s.Window ≥ 1). It returns them as the decoder's
// caches and as Layers (for memory accounting).
func NewCaches(m *model.Model, p *checkpoints.Projections, s Settings) ([]model.LayerCache, []*Layer, error) {
	if s.Window < 1 {
		return nil, nil, fmt.Errorf("the real cache needs a window of at least 1 token (got %d)", s.Window)
	}
	if _, err := NewCompressors(m, p, s); err != nil { // shape checks
		return nil, nil, err
	}
	c := m.Config
	var lcs []model.LayerCache
	var kls []*Layer
	for l, f := range p.Layers {
		ls, err := s.ForRanks(f.KRank, f.VRank, c.KVHeads)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d: %w", l, err)
		}
		kl, err := NewLayer(ls.Layer(c.KVHeads, c.HeadDim, f.KRank, f.VRank), f.Bk, f.Bv)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d: %w", l, err)
		}
		b, err := m.Block(l)
		if err != nil {
			return nil, nil, err
		}
		if err := kl.SetBiases(b.Bk, b.Bv); err != nil {
			return nil, nil, fmt.Errorf("layer %d: %w", l, err)
		}
		kls = append(kls, kl)
		lcs = append(lcs, &cacheLayer{l: kl, ak: f.Ak, av: f.Av, ck: make([]float32, f.KRank), cv: make([]float32, f.VRank), hidden: c.Hidden})
	}
	return lcs, kls, nil
}
