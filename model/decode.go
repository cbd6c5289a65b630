package model

import (
	"fmt"

	"github.com/cskv/cskv/linalg"
)

// LayerCache stores one layer's keys and values during token-by-token
// decoding. Append adds token t = Len() given its original key (before the
// key norm and RoPE) and value (KV) and its attention input x (D); KV fills
// keys and values (Len, KV), before the key norm and RoPE, as attention at
// the newest position must see them.
type LayerCache interface {
	Append(k, v, x []float32) error
	KV(keys, values []float32) error
	Len() int
}

// plainCache is the uncompressed float32 cache.
type plainCache struct {
	kv     int
	keys   []float32 // (t, KV)
	values []float32 // (t, KV)
}

func (p *plainCache) Append(k, v, _ []float32) error {
	p.keys = append(p.keys, k...)
	p.values = append(p.values, v...)
	return nil
}
func (p *plainCache) KV(keys, values []float32) error {
	copy(keys, p.keys)
	copy(values, p.values)
	return nil
}
func (p *plainCache) Len() int { return len(p.keys) / p.kv }

// Decoder runs the model one token at a time with a cache per layer.
type Decoder struct {
	m      *Model
	caches []LayerCache
	rope   *RopeTable
	maxT   int
	pos    int
}

// NewDecoder returns a decoder for up to maxT positions. caches may be nil
// (plain float32 caches) or give one LayerCache per layer.
func (m *Model) NewDecoder(maxT int, caches []LayerCache) (*Decoder, error) {
	c := m.Config
	if caches == nil {
		caches = make([]LayerCache, c.Layers)
		for l := range caches {
			caches[l] = &plainCache{kv: c.KVDim()}
		}
	}
	if len(caches) != c.Layers {
		return nil, fmt.Errorf("decoder: %d caches for %d layers", len(caches), c.Layers)
	}
	r, err := c.Rope()
	if err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	return &Decoder{m: m, caches: caches, rope: NewRopeTable(maxT, r), maxT: maxT}, nil
}

// Pos is the number of tokens consumed so far.
func (d *Decoder) Pos() int { return d.pos }

// Step consumes one token and returns the logits (V) for the next one.
func (d *Decoder) Step(token int) ([]float32, error) {
	m, c := d.m, d.m.Config
	if d.pos >= d.maxT {
		return nil, fmt.Errorf("decoder: position %d beyond the %d positions it was built for", d.pos, d.maxT)
	}
	D, QD, KV, F, dh := c.Hidden, c.QDim(), c.KVDim(), c.FFN, c.HeadDim
	h := make([]float32, D)
	if err := m.EmbedTokens(h, []int{token}); err != nil {
		return nil, err
	}
	t := d.pos
	x := make([]float32, D)
	q := make([]float32, QD)
	k := make([]float32, KV)
	v := make([]float32, KV)
	att := make([]float32, QD)
	keys := make([]float32, (t+1)*KV)
	values := make([]float32, (t+1)*KV)
	scores := make([]float32, t+1)
	kt := make([]float32, dh*(t+1)) // (Dh, t+1) one head's keys, transposed
	vt := make([]float32, dh*(t+1))
	for l := 0; l < c.Layers; l++ {
		b, err := m.Block(l)
		if err != nil {
			return nil, err
		}
		b.AttnInput(c, x, h, 1)
		Linear(q, x, b.Wq, b.Bq, 1, QD, D)
		Linear(k, x, b.Wk, b.Bk, 1, KV, D)
		Linear(v, x, b.Wv, b.Bv, 1, KV, D)
		if err := d.caches[l].Append(k, v, x); err != nil {
			return nil, fmt.Errorf("layer %d: cache: %w", l, err)
		}
		if err := d.caches[l].KV(keys, values); err != nil {
			return nil, fmt.Errorf("layer %d: cache: %w", l, err)
		}
		a := &b.Attn
		a.NormQ(q, 1)
		a.NormK(keys, t+1)
		d.rope.Apply(q, 1, c.Heads, t)
		for j := 0; j <= t; j++ {
			d.rope.Apply(keys[j*KV:(j+1)*KV], 1, c.KVHeads, j)
		}
		group := c.Heads / c.KVHeads
		for kvh := 0; kvh < c.KVHeads; kvh++ {
			transposeHead(kt, keys[kvh*dh:], t+1, dh, KV, 0, t+1)
			transposeHead(vt, values[kvh*dh:], t+1, dh, KV, 0, t+1)
			for hd := kvh * group; hd < (kvh+1)*group; hd++ {
				attendRow(a, att[hd*dh:(hd+1)*dh], scores, q[hd*dh:(hd+1)*dh], kt, vt, t+1, a.FirstKey(t), t)
			}
		}
		b.residual(c, h, att, b.Wo, b.PostAttnNorm, 1, QD, &temps{})
		RMSNorm(x, h, b.FFNNorm, 1, D, c.RMSEps)
		g := make([]float32, F)
		u := make([]float32, F)
		linalg.MatMulT(g, x, b.Wgate, 1, F, D, false)
		linalg.MatMulT(u, x, b.Wup, 1, F, D, false)
		act := activations[c.Activation].f
		for i, gv := range g {
			g[i] = act(gv) * u[i]
		}
		b.residual(c, h, g, b.Wdown, b.PostFFNNorm, 1, F, &temps{})
	}
	logits := make([]float32, c.Vocab)
	m.Logits(logits, h, 1)
	d.pos++
	return logits, nil
}

// Argmax returns the index of the largest value (the first on ties).
func Argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}
