package model

import (
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// SyntheticShape builds a model of architecture cfg with random weights
// drawn from seed: a stand-in for a real model's SHAPE (memory and speed
// measurements at, say, Llama-2-7B layer sizes), not for its behaviour.
// Every projection is Gaussian with standard deviation 1/sqrt(fan-in) (the
// output projections Wo and Wdown half that, as in Synthetic), the norms are
// ones and the embedding is standard normal. Unlike Synthetic, Wk and Wv get
// no shaped spectrum: building one costs O(D³) per matrix, too slow at 7B
// sizes.
//
// Weights are not held in memory: a tensor is generated when it is read,
// from its own random streams (seeded by seed, the tensor's name and the
// position), so it is the same on every read and independent of the order of
// reads and of GOMAXPROCS. Like a model opened from a file, blocks are cached
// after their first read only when the whole model is small (below 2 GiB);
// otherwise Block generates the layer afresh on every call, so walking the
// layers holds one block at a time, as with a file-backed 7B model.
func SyntheticShape(cfg Config, seed uint64) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("synthetic shape: %w", err)
	}
	c := cfg
	if c.Arch == "" {
		c.Arch = "llama"
	}
	if c.ContextLength <= 0 {
		c.ContextLength = 4096
	}
	D, QD, KV, F := c.Hidden, c.QDim(), c.KVDim(), c.FFN
	src := shapeSource{seed: seed, specs: map[string]shapeSpec{}}
	add := func(name string, rows, cols int, std float64) {
		src.specs[name] = shapeSpec{rows, cols, std}
	}
	add(hfNames[Embed], c.Vocab, D, 1)
	add(hfNames[OutputNorm], D, 0, 0)
	if !c.TiedOutput {
		add(hfNames[Output], c.Vocab, D, 1/math.Sqrt(float64(D)))
	}
	for l := 0; l < c.Layers; l++ {
		name := func(r Role) string { return fmt.Sprintf(hfNames[r], l) }
		add(name(AttnNorm), D, 0, 0)
		add(name(FFNNorm), D, 0, 0)
		add(name(Wq), QD, D, 1/math.Sqrt(float64(D)))
		add(name(Wk), KV, D, 1/math.Sqrt(float64(D)))
		add(name(Wv), KV, D, 1/math.Sqrt(float64(D)))
		add(name(Wo), D, QD, 0.5/math.Sqrt(float64(QD)))
		add(name(Wgate), F, D, 1/math.Sqrt(float64(D)))
		add(name(Wup), F, D, 1/math.Sqrt(float64(D)))
		add(name(Wdown), D, F, 0.5/math.Sqrt(float64(F)))
		if c.QKVBias {
			add(name(Bq), QD, 0, 0.02)
			add(name(Bk), KV, 0, 0.02)
			add(name(Bv), KV, 0, 0.02)
		}
	}
	var total int64 // elements
	for name, s := range src.specs {
		n := int64(s.rows) * int64(max(s.cols, 1))
		if n > math.MaxInt64/8-total {
			return nil, fmt.Errorf("synthetic shape: tensor %q of %d×%d is too large", name, s.rows, s.cols)
		}
		total += n
	}
	m := &Model{Config: c, Format: "synthetic-shape", // not Synthetic(): sampling data from random 7B weights is pointless
		Path: fmt.Sprintf("synthetic-shape(seed=%d, hidden=%d, layers=%d, heads=%d/%d, ffn=%d, vocab=%d)",
			seed, c.Hidden, c.Layers, c.Heads, c.KVHeads, c.FFN, c.Vocab),
		Digest: fmt.Sprintf("synthetic-shape-v1-seed-%d-%d-%d-%d-%d-%d-%d-%d-%t-%t",
			seed, c.Hidden, c.Layers, c.Heads, c.KVHeads, c.HeadDim, c.FFN, c.Vocab, c.TiedOutput, c.QKVBias),
		src: src, rope: ropeHalves, keepAll: 4*total < keepAllBytes}
	if err := m.finish(); err != nil {
		return nil, fmt.Errorf("synthetic shape: %w", err)
	}
	return m, nil
}

// shapeSpec is one tensor of SyntheticShape: (rows, cols), or (rows) when
// cols is 0; std 0 means all ones.
type shapeSpec struct {
	rows, cols int
	std        float64
}

// shapeSource generates SyntheticShape's tensors on every read.
type shapeSource struct {
	seed  uint64
	specs map[string]shapeSpec
}

// shapeChunk is how many values of a tensor come from one random stream.
const shapeChunk = 1 << 18

func (s shapeSource) read(name string) ([]float32, []int, error) {
	sp, ok := s.specs[name]
	if !ok {
		return nil, nil, fmt.Errorf("missing tensor %q", name)
	}
	shape, cols := []int{sp.rows, sp.cols}, sp.cols
	if cols == 0 {
		shape, cols = []int{sp.rows}, 1
	}
	out := make([]float32, sp.rows*cols)
	if sp.std == 0 {
		for i := range out {
			out[i] = 1
		}
		return out, shape, nil
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	stream := h.Sum64()
	nChunks := (len(out) + shapeChunk - 1) / shapeChunk
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(runtime.GOMAXPROCS(0), nChunks); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ci := range jobs {
				r := rand.New(rand.NewPCG(s.seed+uint64(ci)*0x9e3779b97f4a7c15, stream))
				part := out[ci*shapeChunk : min((ci+1)*shapeChunk, len(out))]
				for i := range part {
					part[i] = float32(r.NormFloat64() * sp.std)
				}
			}
		}()
	}
	for ci := 0; ci < nChunks; ci++ {
		jobs <- ci
	}
	close(jobs)
	wg.Wait()
	return out, shape, nil
}

func (s shapeSource) has(name string) bool   { _, ok := s.specs[name]; return ok }
func (s shapeSource) names() map[Role]string { return hfNames }
func (s shapeSource) close() error           { return nil }
func (s shapeSource) list() []TensorEntry {
	var out []TensorEntry
	for n, sp := range s.specs {
		shape := []int{sp.rows, sp.cols}
		if sp.cols == 0 {
			shape = []int{sp.rows}
		}
		out = append(out, TensorEntry{Name: n, Shape: shape, Type: "F32"})
	}
	return sortedEntries(out)
}

// Shapes are known architectures SyntheticShape can stand in for (their
// published sizes; the weights are random).
var Shapes = map[string]Config{
	"llama2-7b": {Arch: "llama", Hidden: 4096, Layers: 32, Heads: 32, KVHeads: 32, HeadDim: 128, FFN: 11008,
		Vocab: 32000, ContextLength: 4096, RopeBase: 10000, RMSEps: 1e-5},
	"llama3-8b": {Arch: "llama", Hidden: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 14336,
		Vocab: 128256, ContextLength: 8192, RopeBase: 500000, RMSEps: 1e-5},
	"llama3-70b": {Arch: "llama", Hidden: 8192, Layers: 80, Heads: 64, KVHeads: 8, HeadDim: 128, FFN: 28672,
		Vocab: 128256, ContextLength: 8192, RopeBase: 500000, RMSEps: 1e-5},
}

// ShapeNames lists Shapes' names, sorted, for messages.
func ShapeNames() string { return strings.Join(slices.Sorted(maps.Keys(Shapes)), ", ") }

// OpenShape builds the model a "shape:NAME[:LAYERS]" model name describes:
// SyntheticShape (seed 1) of Shapes[NAME], cut to LAYERS layers.
func OpenShape(spec string) (*Model, error) {
	rest, ok := strings.CutPrefix(spec, ShapePrefix)
	if !ok {
		return nil, fmt.Errorf("model %q: not a %sNAME[:LAYERS] shape", spec, ShapePrefix)
	}
	name, layers, cut := strings.Cut(rest, ":")
	c, ok := Shapes[name]
	if !ok {
		return nil, fmt.Errorf("model %q: unknown shape %q (want one of %s)", spec, name, ShapeNames())
	}
	if cut {
		n, err := strconv.Atoi(layers)
		if err != nil || n < 1 || n > c.Layers {
			return nil, fmt.Errorf("model %q: layers %q: want 1 … %d", spec, layers, c.Layers)
		}
		c.Layers = n
	}
	return SyntheticShape(c, 1)
}

// ShapePrefix starts a model name that OpenShape builds.
const ShapePrefix = "shape:"
