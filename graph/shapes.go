package graph

import (
	"math"
	"math/rand/v2"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model"
)

// BenchShape is a layer shape for benchmarks (`cskv bench` and this
// package's): KRank = VRank = Rank, Seqs·Tokens rows per step.
type BenchShape struct {
	Name                              string
	Hidden, NHeads, NKVHeads, HeadDim int
	Rank                              int
	Seqs, Tokens                      int
}

// KVDim is NKVHeads·HeadDim.
func (b BenchShape) KVDim() int { return b.NKVHeads * b.HeadDim }

// The reference shapes.
var (
	// ShapeStories260K: hidden 64, 8 heads, 4 KV heads × 8, rank 16, 8 × 512 tokens.
	ShapeStories260K = BenchShape{Name: "stories260K", Hidden: 64, NHeads: 8, NKVHeads: 4, HeadDim: 8, Rank: 16, Seqs: 8, Tokens: 512}
	// ShapeLlama2_7B: hidden 4096, 32 heads × 128, rank 2048, 1 × 2048 tokens.
	ShapeLlama2_7B = BenchShape{Name: "llama2-7b", Hidden: 4096, NHeads: 32, NKVHeads: 32, HeadDim: 128, Rank: 2048, Seqs: 1, Tokens: 2048}
	// ShapeLlama3_8B: hidden 4096, 32 query heads, 8 KV heads × 128, rank 512, 1 × 2048 tokens.
	ShapeLlama3_8B = BenchShape{Name: "llama3-8b-gqa", Hidden: 4096, NHeads: 32, NKVHeads: 8, HeadDim: 128, Rank: 512, Seqs: 1, Tokens: 2048}
)

// BenchShapes lists the reference shapes, smallest first.
func BenchShapes() []BenchShape {
	return []BenchShape{ShapeStories260K, ShapeLlama3_8B, ShapeLlama2_7B}
}

// NewRandomSpec returns a float32 KV-loss-only spec (LambdaKV 1, OutSeqs 0,
// no biases, plain Llama attention with RoPE base 10000, block window off) with random weights drawn
// from N(0, 1/Hidden) (so K, V and Q entries are about unit size on unit
// inputs), deterministic in seed. Set OutSeqs, LambdaOut, OutWindow, Quant on
// the result as needed.
func NewRandomSpec(shape BenchShape, seed uint64) LayerSpec {
	r := rand.New(rand.NewPCG(seed, 0x6c61796572))
	d, kv, qd := shape.Hidden, shape.KVDim(), shape.NHeads*shape.HeadDim
	sd := 1 / math.Sqrt(float64(d))
	rope, err := model.RopeScaling{}.Rope(10000, shape.HeadDim, 0)
	if err != nil { // an odd head dim: NewLayer refuses the spec
		rope = model.Rope{}
	}
	return LayerSpec{
		Hidden: d,
		Attn: model.Attention{Heads: shape.NHeads, KVHeads: shape.NKVHeads, HeadDim: shape.HeadDim, Rope: rope,
			Scale: float32(1 / math.Sqrt(float64(shape.HeadDim)))},
		Wq:    randn(r, qd*d, sd),
		Wk:    randn(r, kv*d, sd),
		Wv:    randn(r, kv*d, sd),
		Wo:    randn(r, d*qd, 1/math.Sqrt(float64(qd))),
		KRank: shape.Rank, VRank: shape.Rank,
		Seqs: shape.Seqs, Tokens: shape.Tokens,
		LambdaKV: 1,
	}
}

// RandomFactors returns factors for spec drawn from N(0, 1/Hidden) (A) and
// N(0, 1/rank) (B), deterministic in seed.
func RandomFactors(spec LayerSpec, seed uint64) kv.Factors {
	r := rand.New(rand.NewPCG(seed, 0x666163746f7273))
	d, kvd := spec.Hidden, spec.KVDim()
	sa := 1 / math.Sqrt(float64(d))
	return kv.Factors{
		Ak:    randn(r, spec.KRank*d, sa),
		Bk:    randn(r, kvd*spec.KRank, 1/math.Sqrt(float64(spec.KRank))),
		Av:    randn(r, spec.VRank*d, sa),
		Bv:    randn(r, kvd*spec.VRank, 1/math.Sqrt(float64(spec.VRank))),
		KRank: spec.KRank, VRank: spec.VRank,
	}
}

// RandomInput returns a standard normal batch (N·T, D) for spec.
func RandomInput(spec LayerSpec, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 0x696e707574))
	return randn(r, spec.Rows()*spec.Hidden, 1)
}

func randn(r *rand.Rand, n int, sd float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * sd)
	}
	return v
}
