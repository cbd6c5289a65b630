package model

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// SyntheticConfig is the architecture of the embedded default model: a small
// grouped-query Llama built deterministically from a seed. It is synthetic —
// random weights, not a trained model — and everything that prints about it
// says so.
var SyntheticConfig = Config{
	Arch: "llama", Hidden: 64, Layers: 4, Heads: 8, KVHeads: 2, HeadDim: 8, FFN: 128,
	Vocab: 256, ContextLength: 256, RopeBase: 10000, RMSEps: 1e-5, TiedOutput: true,
}

// memTensor is one in-memory tensor.
type memTensor struct {
	data  []float32
	shape []int
}

// memSource is an in-memory tensor source.
type memSource map[string]memTensor

func (s memSource) read(name string) ([]float32, []int, error) {
	v, ok := s[name]
	if !ok {
		return nil, nil, fmt.Errorf("missing tensor %q", name)
	}
	return append([]float32(nil), v.data...), v.shape, nil
}
func (s memSource) has(name string) bool   { _, ok := s[name]; return ok }
func (s memSource) names() map[Role]string { return hfNames }
func (s memSource) close() error           { return nil }
func (s memSource) list() []TensorEntry {
	var out []TensorEntry
	for n, v := range s {
		out = append(out, TensorEntry{Name: n, Shape: v.shape, Type: "F32"})
	}
	return sortedEntries(out)
}

// Synthetic reports whether m is a synthetic model (built in code, not read
// from a file).
func (m *Model) Synthetic() bool { return m.Format == "synthetic" }

// Synthetic builds the embedded default model from a seed. Its K and V
// projections have a geometrically decaying singular spectrum, so that
// compressing them is meaningful.
func Synthetic(seed uint64) (*Model, error) {
	c := SyntheticConfig
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	src := memSource{}
	normal := func(rows, cols int, std float64) memTensor {
		out := make([]float32, rows*cols)
		for i := range out {
			out[i] = float32(r.NormFloat64() * std)
		}
		return memTensor{out, []int{rows, cols}}
	}
	ones := func(n int) memTensor {
		out := make([]float32, n)
		for i := range out {
			out[i] = 1
		}
		return memTensor{out, []int{n}}
	}
	D, KV, F := c.Hidden, c.KVDim(), c.FFN
	src[hfNames[Embed]] = normal(c.Vocab, D, 1)
	outNorm := ones(D)
	for i := range outNorm.data {
		outNorm.data[i] = 0.15 // softer logits: sampled text is neither random nor deterministic
	}
	src[hfNames[OutputNorm]] = outNorm
	for l := 0; l < c.Layers; l++ {
		name := func(role Role) string { return fmt.Sprintf(hfNames[role], l) }
		src[name(AttnNorm)] = ones(D)
		src[name(FFNNorm)] = ones(D)
		src[name(Wq)] = normal(c.QDim(), D, 1/math.Sqrt(float64(D)))
		src[name(Wk)] = memTensor{decaying(r, KV, D, 0.8), []int{KV, D}}
		src[name(Wv)] = memTensor{decaying(r, KV, D, 0.85), []int{KV, D}}
		src[name(Wo)] = normal(D, c.QDim(), 0.5/math.Sqrt(float64(c.QDim())))
		src[name(Wgate)] = normal(F, D, 1/math.Sqrt(float64(D)))
		src[name(Wup)] = normal(F, D, 1/math.Sqrt(float64(D)))
		src[name(Wdown)] = normal(D, F, 0.5/math.Sqrt(float64(F)))
	}
	m := &Model{Config: c, Path: fmt.Sprintf("synthetic(seed=%d)", seed), Format: "synthetic",
		Digest: fmt.Sprintf("synthetic-v1-seed-%d", seed), src: src, rope: ropeHalves, keepAll: true}
	if err := m.finish(); err != nil {
		return nil, err
	}
	return m, nil
}

// decaying returns a (rows, cols) matrix U·diag(s)·Vᵀ with s_i = decay^i
// (scaled so rows have unit norm on average) and random orthonormal U, V.
func decaying(r *rand.Rand, rows, cols int, decay float64) []float32 {
	k := min(rows, cols)
	u := orthonormal(r, rows, k)
	v := orthonormal(r, cols, k)
	s := make([]float64, k)
	var ss float64
	for i := range s {
		s[i] = math.Pow(decay, float64(i))
		ss += s[i] * s[i]
	}
	norm := math.Sqrt(float64(rows) / ss)
	out := make([]float32, rows*cols)
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			var acc float64
			for t := 0; t < k; t++ {
				acc += u[i*k+t] * s[t] * v[j*k+t]
			}
			out[i*cols+j] = float32(acc * norm)
		}
	}
	return out
}

// orthonormal returns an (n, k) matrix with orthonormal columns (Gram–Schmidt
// on Gaussian columns).
func orthonormal(r *rand.Rand, n, k int) []float64 {
	q := make([]float64, n*k)
	for j := 0; j < k; j++ {
		col := make([]float64, n)
		for i := range col {
			col[i] = r.NormFloat64()
		}
		for p := 0; p < j; p++ {
			var dot float64
			for i := 0; i < n; i++ {
				dot += col[i] * q[i*k+p]
			}
			for i := 0; i < n; i++ {
				col[i] -= dot * q[i*k+p]
			}
		}
		var nrm float64
		for _, x := range col {
			nrm += x * x
		}
		nrm = math.Sqrt(nrm)
		for i := 0; i < n; i++ {
			q[i*k+j] = col[i] / nrm
		}
	}
	return q
}

// SampleTokens draws n sequences of T tokens from the model itself
// (temperature sampling, BOS-free, first token uniform), deterministic for a
// seed. It gives the synthetic model calibration and evaluation data that
// has the structure the model expects.
func (m *Model) SampleTokens(n, T int, temperature float64, seed uint64) ([][]int, error) {
	r := rand.New(rand.NewPCG(seed, 0xda7a))
	out := make([][]int, n)
	probs := make([]float64, m.Config.Vocab)
	for s := range out {
		d, err := m.NewDecoder(T, nil)
		if err != nil {
			return nil, err
		}
		seq := make([]int, T)
		seq[0] = r.IntN(m.Config.Vocab)
		for t := 1; t < T; t++ {
			logits, err := d.Step(seq[t-1])
			if err != nil {
				return nil, err
			}
			mx := math.Inf(-1)
			for _, v := range logits {
				mx = math.Max(mx, float64(v))
			}
			var z float64
			for i, v := range logits {
				probs[i] = math.Exp((float64(v) - mx) / temperature)
				z += probs[i]
			}
			u := r.Float64() * z
			i := 0
			for acc := probs[0]; acc < u && i < len(probs)-1; acc += probs[i] {
				i++
			}
			seq[t] = i
		}
		out[s] = seq
	}
	return out, nil
}
