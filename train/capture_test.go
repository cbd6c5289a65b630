package train

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cskv/cskv/model"
)

// TestCaptureMatchesPerSequenceWalk checks Capture's X at every layer against
// a reference that walks each sequence alone (nSeq = 1 through Block.Forward)
// and, at layer 0, against RMSNorm of the embeddings computed in float64. With
// more sequences than advanceGroup the grouped advance is exercised too.
func TestCaptureMatchesPerSequenceWalk(t *testing.T) {
	m, err := model.Synthetic(3)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config
	const T = 12
	nSeq := advanceGroup(T) + 2
	seqs := make([][]int, nSeq)
	for i := range seqs {
		seqs[i] = make([]int, T)
		for j := range seqs[i] {
			seqs[i][j] = (i*37 + j*11 + 5) % c.Vocab
		}
	}
	D := c.Hidden
	// Reference: each sequence alone.
	ref := make([][][]float32, c.Layers) // [layer][seq] (T, D)
	r, err := c.Rope()
	if err != nil {
		t.Fatal(err)
	}
	rope := model.NewRopeTable(T, r)
	for i, seq := range seqs {
		h := make([]float32, T*D) // (T, D)
		if err := m.EmbedTokens(h, seq); err != nil {
			t.Fatal(err)
		}
		for l := 0; l < c.Layers; l++ {
			blk, err := m.Block(l)
			if err != nil {
				t.Fatal(err)
			}
			x := make([]float32, T*D) // (T, D)
			blk.AttnInput(c, x, h, T)
			if ref[l] == nil {
				ref[l] = make([][]float32, nSeq)
			}
			ref[l][i] = x
			if err := blk.Forward(c, h, 1, T, rope, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	var layers []int
	err = Capture(context.Background(), m, seqs, func(l int, blk *model.Block, x []float32) error {
		layers = append(layers, l)
		if len(x) != nSeq*T*D {
			t.Fatalf("layer %d: x has %d values, want %d", l, len(x), nSeq*T*D)
		}
		want, _ := m.Block(l)
		if &blk.Wk[0] != &want.Wk[0] {
			t.Errorf("layer %d: callback got another block", l)
		}
		for i := 0; i < nSeq; i++ {
			got := x[i*T*D : (i+1)*T*D]
			var worst float64
			for j, v := range ref[l][i] {
				worst = max(worst, math.Abs(float64(got[j]-v))/(1+math.Abs(float64(v))))
			}
			if worst > 1e-5 {
				t.Errorf("layer %d sequence %d: X differs from the per-sequence walk by %.3g", l, i, worst)
			}
		}
		if l == 0 { // X = e / rms(e) · w, by hand in float64
			var worst float64
			for r := 0; r < nSeq*T; r++ {
				tok := seqs[r/T][r%T]
				e := m.Embed[tok*D : (tok+1)*D]
				var ss float64
				for _, v := range e {
					ss += float64(v) * float64(v)
				}
				inv := 1 / math.Sqrt(ss/float64(D)+c.RMSEps)
				for j, v := range e {
					want := float64(v) * inv * float64(blk.AttnNorm[j])
					worst = max(worst, math.Abs(float64(x[r*D+j])-want))
				}
			}
			if worst > 1e-5 {
				t.Errorf("layer 0: X differs from RMSNorm of the embeddings by %.3g", worst)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != c.Layers {
		t.Fatalf("callback ran for layers %v, want 0…%d", layers, c.Layers-1)
	}
	for i, l := range layers {
		if l != i {
			t.Fatalf("callback ran for layers %v, want in order", layers)
		}
	}
}

func TestCaptureErrors(t *testing.T) {
	m, err := model.Synthetic(3)
	if err != nil {
		t.Fatal(err)
	}
	nop := func(int, *model.Block, []float32) error { return nil }
	ctx := context.Background()
	cases := []struct {
		name string
		seqs [][]int
		each func(int, *model.Block, []float32) error
		want string
	}{
		{"no sequences", nil, nop, "no sequences"},
		{"empty", [][]int{{}}, nop, "empty"},
		{"ragged", [][]int{{1, 2, 3}, {1, 2}}, nop, "sequence 1 has 2 tokens"},
		{"bad token", [][]int{{1, 99999}}, nop, "outside the vocabulary"},
		{"nil callback", [][]int{{1, 2}}, nil, "nil callback"},
	}
	for _, tc := range cases {
		err := Capture(ctx, m, tc.seqs, tc.each)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// The callback's error stops the walk and names the layer.
	boom := errors.New("boom")
	calls := 0
	err = Capture(ctx, m, [][]int{{1, 2, 3}}, func(l int, _ *model.Block, _ []float32) error {
		calls++
		if l == 1 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "layer 1") || calls != 2 {
		t.Errorf("callback error: got %v after %d calls, want boom at layer 1 after 2 calls", err, calls)
	}
	// A cancelled context stops before the next layer.
	cctx, cancel := context.WithCancel(ctx)
	calls = 0
	err = Capture(cctx, m, [][]int{{1, 2, 3}}, func(int, *model.Block, []float32) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Errorf("cancel: got %v after %d calls, want context.Canceled after 1 call", err, calls)
	}
}

// llama2_7bLayers is Llama-2-7B's layer shape with two layers.
var llama2_7bLayers = model.Config{
	Arch: "llama", Hidden: 4096, Layers: 2, Heads: 32, KVHeads: 32, HeadDim: 128, FFN: 11008,
	Vocab: 32000, ContextLength: 4096, RopeBase: 10000, RMSEps: 1e-5,
}

// BenchmarkCapture7BShape measures the peak resident memory and time of
// capturing 4 sequences × 512 tokens through two Llama-2-7B-shaped layers
// (random weights, generated when read, so that like a file-backed 7B model
// only the embedding and the current block are resident) with the whitening
// statistics (XᵀX, 128 MiB) of each layer, as Run does before initialising a
// layer. Metrics: peak_rss_MiB (the process's high-water mark), rss_before_MiB
// (the high-water mark after building the model: embedding and runtime),
// block_MiB (one layer's weights), capture_s (per capture, including
// generating each block, which stands in for reading it from a file). Run with
//
//	go test -tags openblas -run '^$' -bench Capture7BShape -benchtime 1x ./train
func BenchmarkCapture7BShape(b *testing.B) {
	if testing.Short() {
		b.Skip("7B-sized layers: about 1 minute and 2.5 GiB; skipped with -short")
	}
	const nSeq, T = 4, 512
	t0 := time.Now()
	m, err := model.SyntheticShape(llama2_7bLayers, 7)
	if err != nil {
		b.Fatal(err)
	}
	build := time.Since(t0)
	c := m.Config
	blockBytes := 4 * int64(2*c.QDim()*c.Hidden+2*c.KVDim()*c.Hidden+3*c.FFN*c.Hidden+2*c.Hidden)
	seqs := make([][]int, nSeq)
	for i := range seqs {
		seqs[i] = make([]int, T)
		for j := range seqs[i] {
			seqs[i][j] = (i*7919 + j*104729) % c.Vocab
		}
	}
	hwmBefore := PeakRSS()
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		err := Capture(context.Background(), m, seqs, func(l int, blk *model.Block, x []float32) error {
			s, err := NewStats(c.Hidden, true)
			if err != nil {
				return err
			}
			return s.Add(x)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(PeakRSS())/(1<<20), "peak_rss_MiB")
	b.ReportMetric(float64(hwmBefore)/(1<<20), "rss_before_MiB")
	b.ReportMetric(float64(blockBytes)/(1<<20), "block_MiB")
	b.ReportMetric(build.Seconds(), "build_s")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "capture_s")
}
