package kvcache

import (
	"math"
	"testing"

	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model"
)

// Training-time and evaluation-time quantisation are one rule: on the same
// input and factors, the KV loss of the QAT graph equals the MSE of the keys
// and values that the simulated cache reconstructs (tolerance 1e-5 relative:
// the two sides multiply in different BLAS calls).
func TestQATMatchesEvaluation(t *testing.T) {
	shape := graph.BenchShape{Name: "t", Hidden: 32, NHeads: 4, NKVHeads: 2, HeadDim: 8, Rank: 8, Seqs: 2, Tokens: 64}
	for _, bits := range []int{2, 4} {
		for _, perChannel := range []bool{true, false} {
			spec := graph.NewRandomSpec(shape, 1)
			spec.Quant = kv.Quant{KBits: bits, VBits: bits, KPerChannel: perChannel, QuantWindow: 32}
			f := graph.RandomFactors(spec, 2)
			layer, err := graph.NewLayer(spec, f)
			if err != nil {
				t.Fatal(err)
			}
			x := graph.RandomInput(spec, 3)
			got, err := layer.Eval(x)
			layer.Close()
			if err != nil {
				t.Fatal(err)
			}
			k, v, err := spec.Quant.Specs(shape.Rank, shape.Rank, shape.NKVHeads)
			if err != nil {
				t.Fatal(err)
			}
			kvDim := shape.KVDim()
			c := &Compressor{f: f,
				hidden: shape.Hidden, kvDim: kvDim, s: Settings{K: k, V: v}}
			n := shape.Seqs * shape.Tokens
			kt, vt := make([]float32, n*kvDim), make([]float32, n*kvDim)
			model.Linear(kt, x, spec.Wk, nil, n, kvDim, shape.Hidden)
			model.Linear(vt, x, spec.Wv, nil, n, kvDim, shape.Hidden)
			kr, vr := make([]float32, n*kvDim), make([]float32, n*kvDim)
			if err := c.Replace(kr, vr, x, kt, vt, shape.Seqs, shape.Tokens); err != nil {
				t.Fatal(err)
			}
			ke, _ := sqDiff(kt, kr)
			ve, _ := sqDiff(vt, vr)
			want := (ke + ve) / float64(n*kvDim)
			if rel := math.Abs(got.KV/want - 1); rel > 1e-5 {
				t.Errorf("%d bits, per-channel keys %v: graph KV loss %.8g, evaluation's %.8g (rel %.2g)", bits, perChannel, got.KV, want, rel)
			}
		}
	}
}
