package kvcache

import (
	"fmt"
	"math"
	"sync"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/model/dtype"
	"github.com/cskv/cskv/quant"
)

// Settings choose the compressed cache of a whole model: its bi-branch
// window and the quantisation of each side's features. Layer gives one
// layer's Config for the real cache; NewCompressors simulates the same cache
// over whole sequences at once.
type Settings struct {
	Window int           // W: tokens kept original (0 = every key/value reconstructed)
	Mode   kv.WindowMode // block (reference rule) or sliding
	K, V   quant.Spec    // post-training (or QAT) quantisation of the features; Bits 16 = off
	// FP16Cache emulates the real cache's storage (Layer): the features of
	// a side with Bits 16 are rounded to fp16 (quantised sides and the
	// float32 window need nothing). Parallel evaluation then equals
	// token-by-token decoding with the cache.
	FP16Cache bool
}

// Layer returns the real cache's Config of one layer with kvHeads heads of
// headDim and ranks kRank, vRank under s.
func (s Settings) Layer(kvHeads, headDim, kRank, vRank int) Config {
	return Config{NKVHeads: kvHeads, HeadDim: headDim, KRank: kRank, VRank: vRank,
		Window: s.Window, Mode: s.Mode, K: s.K, V: s.V}
}

// Compressor is the simulated cache of one layer, a model.KVOverride for the
// parallel forward over whole sequences:
// K̂ = Q(X·Akᵀ)·Bkᵀ (+ bias), V̂ likewise, with Q the fake quantisation. It
// accumulates the relative reconstruction error over everything it sees.
type Compressor struct {
	Layer  int
	f      kv.Factors
	bk, bv []float32 // (KV) biases of the original projections, or nil
	hidden int
	kvDim  int
	s      Settings

	// MeasureOnly only measures the errors: attention keeps every original
	// key and value (the uncompressed model, with errors on its inputs).
	MeasureOnly bool

	mu                       sync.Mutex
	kErr, kNorm, vErr, vNorm float64
}

// NewCompressors builds one Compressor per layer, checking every factor's
// shape against the model.
func NewCompressors(m *model.Model, p *checkpoints.Projections, s Settings) ([]*Compressor, error) {
	c := m.Config
	if len(p.Layers) != c.Layers {
		return nil, fmt.Errorf("projections have %d layers, the model %d", len(p.Layers), c.Layers)
	}
	if p.Hidden != c.Hidden || p.KVDim != c.KVDim() {
		return nil, fmt.Errorf("projections are for hidden %d / kv dim %d, the model has %d / %d", p.Hidden, p.KVDim, c.Hidden, c.KVDim())
	}
	out := make([]*Compressor, c.Layers)
	for l, f := range p.Layers {
		if err := f.Check(c.Hidden, c.KVDim()); err != nil {
			return nil, fmt.Errorf("layer %d: %w", l, err)
		}
		ls, err := s.ForRanks(f.KRank, f.VRank, c.KVHeads)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", l, err)
		}
		b, err := m.Block(l)
		if err != nil {
			return nil, err
		}
		out[l] = &Compressor{Layer: l, f: f, bk: b.Bk, bv: b.Bv, hidden: c.Hidden, kvDim: c.KVDim(), s: ls}
	}
	return out, nil
}

// ForRanks returns the settings for a layer of ranks rk, rv: the same
// quantisation with every per-token group one head's share of that layer's
// channels (docs/METHOD.md §4), so a plan with ranks per layer (§7) keeps
// one setting for the whole model.
func (s Settings) ForRanks(rk, rv, kvHeads int) (Settings, error) {
	group := func(side string, q quant.Spec, rank int) (quant.Spec, error) {
		if !q.Enabled() || q.Grouping != quant.PerToken {
			return q, nil
		}
		if rank%kvHeads != 0 {
			return q, fmt.Errorf("%s rank %d is not a multiple of the %d kv heads (per-token quantisation groups are one head's channels)", side, rank, kvHeads)
		}
		q.GroupSize = rank / kvHeads
		return q, nil
	}
	var err error
	if s.K, err = group("key", s.K, rk); err != nil {
		return s, err
	}
	s.V, err = group("value", s.V, rv)
	return s, err
}

// Overrides returns the compressors as the model's per-layer overrides.
func Overrides(cs []*Compressor) []model.KVOverride {
	out := make([]model.KVOverride, len(cs))
	for i, c := range cs {
		out[i] = c
	}
	return out
}

// Window implements model.KVOverride.
func (c *Compressor) Window() (int, kv.WindowMode) {
	if c.MeasureOnly {
		return math.MaxInt32, kv.WindowBlock // every key in the current block: all original
	}
	return c.s.Window, c.s.Mode
}

// Replace implements model.KVOverride.
func (c *Compressor) Replace(kr, vr, x, k, v []float32, nSeq, T int) error {
	if err := c.reconstruct(kr, x, c.f.Ak, c.f.Bk, c.bk, c.f.KRank, c.s.K, nSeq, T); err != nil {
		return fmt.Errorf("layer %d: keys: %w", c.Layer, err)
	}
	if err := c.reconstruct(vr, x, c.f.Av, c.f.Bv, c.bv, c.f.VRank, c.s.V, nSeq, T); err != nil {
		return fmt.Errorf("layer %d: values: %w", c.Layer, err)
	}
	ke, kn := sqDiff(k, kr)
	ve, vn := sqDiff(v, vr)
	c.mu.Lock()
	c.kErr += ke
	c.kNorm += kn
	c.vErr += ve
	c.vNorm += vn
	c.mu.Unlock()
	return nil
}

// reconstruct writes out (n, KV) = Q(X·Aᵀ)·Bᵀ (+ bias), quantising each
// sequence's (T, rank) features separately. With per-channel (KIVI) key
// groups, the tokens after the last complete group keep full-precision
// features, exactly as the real cache holds them until their group fills.
func (c *Compressor) reconstruct(out, x, a, b, bias []float32, rank int, q quant.Spec, nSeq, T int) error {
	n := nSeq * T
	feat := make([]float32, n*rank) // (n, rank)
	linalg.MatMulT(feat, x, a, n, rank, c.hidden, false)
	if !q.Enabled() && c.s.FP16Cache {
		roundF16(feat)
	}
	if q.Enabled() {
		rows := T
		if q.Grouping == quant.PerChannel { // a trailing partial group stays unquantised (pending in the cache)
			rows = T / q.GroupSize * q.GroupSize
		}
		for s := 0; s < nSeq; s++ {
			f := feat[s*T*rank : (s*T+rows)*rank]
			if err := quant.FakeQuant(f, nil, f, rows, rank, q); err != nil {
				return err
			}
		}
	}
	model.Linear(out, feat, b, bias, n, c.kvDim, rank)
	return nil
}

func roundF16(x []float32) {
	for i, v := range x {
		x[i] = dtype.RoundF16(v)
	}
}

func sqDiff(a, b []float32) (diff, norm float64) {
	for i := range a {
		d := float64(a[i] - b[i])
		diff += d * d
		norm += float64(a[i]) * float64(a[i])
	}
	return diff, norm
}

// RelErrors returns ‖K − K̂‖/‖K‖ and ‖V − V̂‖/‖V‖ over everything seen.
func (c *Compressor) RelErrors() (k, v float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return math.Sqrt(c.kErr / c.kNorm), math.Sqrt(c.vErr / c.vNorm)
}
