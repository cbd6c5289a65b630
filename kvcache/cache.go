package kvcache

import (
	"fmt"
	"math"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model/dtype"
	"github.com/cskv/cskv/quant"
)

// side is one of the two compressed branches (keys or values).
type side struct {
	name    string
	spec    quant.Spec
	rank    int
	group   int       // tokens per completed group (groupTokens)
	stored  int       // tokens in the compressed branch: a multiple of group
	packed  []byte    // (stored, rank) codes, bit-packed, token-major
	scale   []uint16  // (stored·rank/GroupSize) fp16 bits
	zero    []uint16  // (stored·rank/GroupSize) fp16 bits
	f16     []uint16  // (stored, rank) fp16 features, bits 16 only
	pending []float32 // (Len − stored, rank) features waiting for their group
	b       []float32 // (D, rank) the factor B
	bias    []float32 // (D) the original projection's bias, or nil
}

// Layer is one decoder layer's bi-branch cache.
type Layer struct {
	cfg   Config
	n     int       // tokens appended
	origK []float32 // (held, D) original keys, float32; token j in slot j mod W
	origV []float32 // (held, D) original values, float32
	k, v  side
}

// NewLayer makes an empty cache. Bk (D, KRank) and Bv (D, VRank) are the
// row-major [out, in] factors (K̂ = Ck·Bkᵀ); they are copied.
func NewLayer(cfg Config, Bk, Bv []float32) (*Layer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := cfg.KVDim()
	if len(Bk) != d*cfg.KRank {
		return nil, fmt.Errorf("kvcache: Bk has %d numbers, want (%d, %d)", len(Bk), d, cfg.KRank)
	}
	if len(Bv) != d*cfg.VRank {
		return nil, fmt.Errorf("kvcache: Bv has %d numbers, want (%d, %d)", len(Bv), d, cfg.VRank)
	}
	mk := func(name string, s quant.Spec, rank int, b []float32) side {
		g := groupTokens(s)
		sd := side{name: name, spec: s, rank: rank, group: g, b: append([]float32(nil), b...)}
		if s.Enabled() {
			sd.pending = make([]float32, 0, g*rank)
		}
		return sd
	}
	return &Layer{
		cfg:   cfg,
		origK: make([]float32, 0, cfg.Window*d),
		origV: make([]float32, 0, cfg.Window*d),
		k:     mk("keys", cfg.K, cfg.KRank, Bk),
		v:     mk("values", cfg.V, cfg.VRank, Bv),
	}, nil
}

// SetBiases gives the biases bk, bv (D each, or nil) of the original key and
// value projections (Qwen2): reconstructed keys and values add them,
// K̂_j = B·dequant(C_j) + bk, as the parallel evaluation does. They are
// copied.
func (c *Layer) SetBiases(bk, bv []float32) error {
	d := c.cfg.KVDim()
	for _, b := range []struct {
		name string
		sd   *side
		v    []float32
	}{{"key", &c.k, bk}, {"value", &c.v, bv}} {
		if b.v != nil && len(b.v) != d {
			return fmt.Errorf("kvcache: %s bias has %d numbers, want %d", b.name, len(b.v), d)
		}
		b.sd.bias = append([]float32(nil), b.v...)
		if b.v == nil {
			b.sd.bias = nil
		}
	}
	return nil
}

// Len is the number of tokens appended.
func (c *Layer) Len() int { return c.n }

// Config returns the layer's configuration.
func (c *Layer) Config() Config { return c.cfg }

func checkFinite(name string, x []float32) error {
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%s[%d] = %g is not finite", name, i, v)
		}
	}
	return nil
}

// Append adds token t = Len(): k, v (D) its original pre-RoPE key and value,
// ck (KRank) and cv (VRank) its compressed features. On error nothing changes.
func (c *Layer) Append(k, v, ck, cv []float32) error {
	d := c.cfg.KVDim()
	t := c.n
	if len(k) != d || len(v) != d || len(ck) != c.cfg.KRank || len(cv) != c.cfg.VRank {
		return fmt.Errorf("kvcache: append token %d: lengths k %d, v %d, ck %d, cv %d; want %d, %d, %d, %d",
			t, len(k), len(v), len(ck), len(cv), d, d, c.cfg.KRank, c.cfg.VRank)
	}
	for _, a := range []struct {
		name string
		x    []float32
	}{{"k", k}, {"v", v}, {"ck", ck}, {"cv", cv}} {
		if err := checkFinite(a.name, a.x); err != nil {
			return fmt.Errorf("kvcache: append token %d: %w", t, err)
		}
	}
	// Full-precision branch: slot t mod W.
	w := c.cfg.Window
	if c.cfg.Mode == kv.WindowBlock && t%w == 0 {
		c.origK, c.origV = c.origK[:0], c.origV[:0] // the previous block is left
	}
	slot := t % w * d
	if slot == len(c.origK) {
		c.origK = c.origK[:slot+d]
		c.origV = c.origV[:slot+d]
	}
	for i := 0; i < d; i++ {
		c.origK[slot+i] = k[i]
		c.origV[slot+i] = v[i]
	}

	// Config.Validate and the finiteness check leave quantisation nothing to
	// refuse, so these errors are guards only.
	if err := c.k.add(ck); err != nil {
		return fmt.Errorf("kvcache: append token %d: %w", t, err)
	}
	if err := c.v.add(cv); err != nil {
		return fmt.Errorf("kvcache: append token %d: %w", t, err)
	}
	c.n++
	return nil
}

// add stores one token's features, compressing its group when it completes.
func (sd *side) add(x []float32) error {
	if !sd.spec.Enabled() {
		for _, f := range x {
			sd.f16 = append(sd.f16, dtype.F32ToF16(f))
		}
		sd.stored++
		return nil
	}
	sd.pending = append(sd.pending, x...)
	if len(sd.pending) < sd.group*sd.rank {
		return nil
	}
	codes, err := quant.Quantize(sd.pending, sd.group, sd.rank, sd.spec)
	if err != nil {
		return fmt.Errorf("%s: %w", sd.name, err)
	}
	packed, err := quant.AppendPacked(sd.packed, sd.stored*sd.rank, codes.Q, sd.spec.Bits)
	if err != nil {
		return fmt.Errorf("%s: %w", sd.name, err)
	}
	sd.packed = packed
	sd.scale = append(sd.scale, codes.Scale...)
	sd.zero = append(sd.zero, codes.Zero...)
	sd.stored += sd.group
	sd.pending = sd.pending[:0]
	return nil
}

// features writes the dequantised features of the stored tokens into dst
// (stored, rank).
func (sd *side) features(dst []float32) error {
	if !sd.spec.Enabled() {
		for i, h := range sd.f16 {
			dst[i] = dtype.F16ToF32(h)
		}
		return nil
	}
	q := make([]uint8, sd.stored*sd.rank)
	if err := quant.Unpack(q, sd.packed, sd.spec.Bits); err != nil {
		return err
	}
	return quant.Dequantize(dst, quant.Codes{Spec: sd.spec, Rows: sd.stored, Cols: sd.rank, Q: q, Scale: sd.scale, Zero: sd.zero})
}

// reconstruct writes row j of C·Bᵀ (+ bias): out[d] = Σ_r c[r]·B[d, r]
// with linalg.Dot, the arithmetic of linalg.MatMulT in exact mode, then the
// bias added as model.Linear adds it, so decoding with the cache can
// reproduce a parallel evaluation exactly.
func reconstruct(out, c, b, bias []float32, rank int) {
	for d := range out {
		out[d] = linalg.Dot(c, b[d*rank:(d+1)*rank])
	}
	for d, x := range bias {
		out[d] += x
	}
}

// KV fills keys and values (Len, D) for the query at t = Len() − 1: the
// original for every j the mode reads as original, B·dequant(C_j) otherwise.
// Keys are pre-RoPE.
func (c *Layer) KV(keys, values []float32) error {
	n, d := c.n, c.cfg.KVDim()
	if n == 0 {
		return fmt.Errorf("kvcache: KV of an empty cache")
	}
	if len(keys) != n*d || len(values) != n*d {
		return fmt.Errorf("kvcache: KV of %d tokens: len(keys) = %d, len(values) = %d, want %d", n, len(keys), len(values), n*d)
	}
	t := n - 1
	for _, p := range []struct {
		sd   *side
		orig []float32
		out  []float32
	}{{&c.k, c.origK, keys}, {&c.v, c.origV, values}} {
		feat := make([]float32, p.sd.stored*p.sd.rank)
		if err := p.sd.features(feat); err != nil {
			return fmt.Errorf("kvcache: %s: %w", p.sd.name, err)
		}
		for j := 0; j <= t; j++ {
			row := p.out[j*d : (j+1)*d]
			if c.cfg.Mode.Original(j, t, c.cfg.Window) {
				slot := j % c.cfg.Window * d
				for i := range row {
					row[i] = p.orig[slot+i]
				}
				continue
			}
			if j >= p.sd.stored { // excluded by Config.Validate; kept as a guard
				return fmt.Errorf("kvcache: %s: token %d is not original for query %d and its group is incomplete", p.sd.name, j, t)
			}
			reconstruct(row, feat[j*p.sd.rank:(j+1)*p.sd.rank], p.sd.b, p.sd.bias, p.sd.rank)
		}
	}
	return nil
}

// AllocatedBytes is what the cache holds: the live length times the element
// size of every backing store (float32 originals, packed codes, fp16 scales and
// zeros, fp16 features with bits 16, float32 pending features). It equals
// Bytes(c.Config(), c.Len()).Total.
func (c *Layer) AllocatedBytes() int64 {
	total := 4*int64(len(c.origK)) + 4*int64(len(c.origV))
	for _, sd := range []*side{&c.k, &c.v} {
		total += int64(len(sd.packed)) + 2*int64(len(sd.scale)) + 2*int64(len(sd.zero)) +
			2*int64(len(sd.f16)) + 4*int64(len(sd.pending))
	}
	return total
}
