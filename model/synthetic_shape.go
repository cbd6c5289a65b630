package model

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
)

// SyntheticShape builds an in-memory model of architecture cfg with random
// weights drawn from seed: a stand-in for a real model's SHAPE (memory and
// speed measurements at, say, Llama-2-7B layer sizes), not for its behaviour.
// Every projection is Gaussian with standard deviation 1/sqrt(fan-in) (the
// output projections Wo and Wdown half that, as in Synthetic), the norms are
// ones and the embedding is standard normal. Unlike Synthetic, Wk and Wv get
// no shaped spectrum: building one costs O(D³) per matrix, too slow at 7B
// sizes. Each tensor has its own random stream (seeded by seed and the
// tensor's name), so the weights do not depend on the order of generation.
//
// The weights stay resident (about 4 bytes per parameter); blocks are cached
// after their first read only when the whole model is below the size at
// which files opened with Open are cached too, so Block copies a layer out of
// memory on every call for large shapes, like reading it from a file.
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
	type spec struct {
		name       string
		rows, cols int     // cols 0: a vector of rows elements
		std        float64 // 0: all ones
	}
	specs := []spec{{hfNames[Embed], c.Vocab, D, 1}, {hfNames[OutputNorm], D, 0, 0}}
	if !c.TiedOutput {
		specs = append(specs, spec{hfNames[Output], c.Vocab, D, 1 / math.Sqrt(float64(D))})
	}
	for l := 0; l < c.Layers; l++ {
		name := func(r Role) string { return fmt.Sprintf(hfNames[r], l) }
		specs = append(specs,
			spec{name(AttnNorm), D, 0, 0},
			spec{name(FFNNorm), D, 0, 0},
			spec{name(Wq), QD, D, 1 / math.Sqrt(float64(D))},
			spec{name(Wk), KV, D, 1 / math.Sqrt(float64(D))},
			spec{name(Wv), KV, D, 1 / math.Sqrt(float64(D))},
			spec{name(Wo), D, QD, 0.5 / math.Sqrt(float64(QD))},
			spec{name(Wgate), F, D, 1 / math.Sqrt(float64(D))},
			spec{name(Wup), F, D, 1 / math.Sqrt(float64(D))},
			spec{name(Wdown), D, F, 0.5 / math.Sqrt(float64(F))},
		)
		if c.QKVBias {
			specs = append(specs,
				spec{name(Bq), QD, 0, 0.02}, spec{name(Bk), KV, 0, 0.02}, spec{name(Bv), KV, 0, 0.02})
		}
	}
	var total int64
	for _, s := range specs {
		n := int64(s.rows) * int64(max(s.cols, 1))
		if n > math.MaxInt32*int64(16) || total > math.MaxInt64/8-n {
			return nil, fmt.Errorf("synthetic shape: tensor %q of %d×%d is too large", s.name, s.rows, s.cols)
		}
		total += n
	}

	src := make(memSource, len(specs))
	tensors := make([]memTensor, len(specs))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				tensors[i] = fillTensor(specs[i].name, specs[i].rows, specs[i].cols, specs[i].std, seed)
			}
		}()
	}
	for i := range specs {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	for i, s := range specs {
		src[s.name] = tensors[i]
	}
	m := &Model{Config: c, Format: "synthetic",
		Path:   fmt.Sprintf("synthetic-shape(seed=%d, hidden=%d, layers=%d, heads=%d/%d, ffn=%d, vocab=%d)", seed, c.Hidden, c.Layers, c.Heads, c.KVHeads, c.FFN, c.Vocab),
		Digest: fmt.Sprintf("synthetic-shape-v1-seed-%d-%dx%dx%dx%dx%dx%dx%dx%d", seed, c.Hidden, c.Layers, c.Heads, c.KVHeads, c.HeadDim, c.FFN, c.Vocab, boolInt(c.QKVBias)),
		src:    src, rope: ropeHalves, keepAll: 4*total < keepAllBytes}
	if err := m.finish(); err != nil {
		return nil, fmt.Errorf("synthetic shape: %w", err)
	}
	return m, nil
}

// fillTensor draws one tensor of SyntheticShape: (rows, cols), or (rows) when
// cols is 0; std 0 means all ones.
func fillTensor(name string, rows, cols int, std float64, seed uint64) memTensor {
	shape := []int{rows, cols}
	if cols == 0 {
		shape, cols = []int{rows}, 1
	}
	out := make([]float32, rows*cols)
	if std == 0 {
		for i := range out {
			out[i] = 1
		}
		return memTensor{out, shape}
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	r := rand.New(rand.NewPCG(seed, h.Sum64()))
	for i := range out {
		out[i] = float32(r.NormFloat64() * std)
	}
	return memTensor{out, shape}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
