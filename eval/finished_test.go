package eval

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// EvaluateRun on a finished run: without data a real model gets the memory
// table only; with data the three rows equal the direct measurements, and
// the memory rows the formula of package kvcache. (The batch of 4 is
// EvaluateRun's: batching changes the order of sums in the products.)
func TestEvaluateRun(t *testing.T) {
	mp := testassets.Path(t, "models/stories260K.gguf")
	evalText := testassets.Path(t, "data/tinystories_eval.txt")
	cfg := train.Defaults()
	cfg.Model, cfg.Data = mp, testassets.Path(t, "data/tinystories_calib.txt")
	cfg.SeqLen, cfg.CalibChunks, cfg.Holdout, cfg.Steps = 64, 8, 0, 0
	cfg.Init, cfg.KDensity, cfg.VDensity = train.SVDInit, 0.25, 0.5
	cfg.Export = filepath.Join(t.TempDir(), "p.safetensors")
	res, err := train.Run(context.Background(), cfg, train.Env{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	kRank, vRank := res.Layers[0].KRank, res.Layers[0].VRank
	k, v, err := kv.Quant{KBits: 16, VBits: 16, KPerChannel: true, QuantWindow: 32}.Specs(kRank, vRank, m.Config.KVHeads)
	if err != nil {
		t.Fatal(err)
	}
	s := kvcache.Settings{Window: 16, Mode: kv.WindowSliding, K: k, V: v}
	r := Run{Projections: res.Projections, Cache: s, Data: data.Source{SeqLen: 64}, Chunks: 4}

	rep, err := EvaluateRun(context.Background(), m, r)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Eval != nil || len(rep.Memory) != 2 {
		t.Fatalf("no data: %d eval rows, %d memory rows; want 0 and 2", len(rep.Eval), len(rep.Memory))
	}
	cc := kvcache.Config{NKVHeads: m.Config.KVHeads, HeadDim: m.Config.HeadDim, KRank: kRank, VRank: vRank, Window: 16, Mode: kv.WindowSliding, K: k, V: v}
	for i, n := range []int{4096, m.Config.ContextLength} {
		row := rep.Memory[i]
		if want := float64(kvcache.Bytes(cc, n).Total) / float64(n); row.Context != n || row.CachePerToken != want {
			t.Errorf("memory row %d: context %d, %g B/token; want %d, %g", i, row.Context, row.CachePerToken, n, want)
		}
	}

	r.Data.Path = evalText
	if rep, err = EvaluateRun(context.Background(), m, r); err != nil {
		t.Fatal(err)
	}
	chunks, err := data.Source{Path: evalText, SeqLen: 64}.Chunks(m, 4)
	if err != nil {
		t.Fatal(err)
	}
	p, err := checkpoints.ReadProjections(res.Projections)
	if err != nil {
		t.Fatal(err)
	}
	base, err := Perplexity(context.Background(), m, chunks, nil, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []RunRow{{Variant: "uncompressed", Perplexity: base.Perplexity}}
	for _, w := range []int{0, 16} {
		sw := s
		sw.Window = w
		got, errs, err := Compressed(context.Background(), m, chunks, p, sw, 4, nil)
		if err != nil {
			t.Fatal(err)
		}
		kr, vr := MeanErrors(errs)
		name := "all-compressed"
		if w > 0 {
			name = "bi-branch sliding W=16"
		}
		want = append(want, RunRow{Variant: name, Window: w, Perplexity: got.Perplexity, KRel: kr, VRel: vr})
	}
	if len(rep.Eval) != len(want) {
		t.Fatalf("%d eval rows, want %d", len(rep.Eval), len(want))
	}
	for i, g := range rep.Eval {
		w := want[i]
		if g.Variant != w.Variant || g.Window != w.Window || fmt.Sprintf("%.10g %.10g %.10g", g.Perplexity, g.KRel, g.VRel) != fmt.Sprintf("%.10g %.10g %.10g", w.Perplexity, w.KRel, w.VRel) {
			t.Errorf("row %d: %+v, want %+v", i, g, w)
		}
		if i > 0 && len(g.Layers) != m.Config.Layers {
			t.Errorf("row %d: %d layer errors, want %d", i, len(g.Layers), m.Config.Layers)
		}
	}
	if !(rep.Eval[1].Perplexity > rep.Eval[2].Perplexity && rep.Eval[2].Perplexity > rep.Eval[0].Perplexity) {
		t.Errorf("perplexities uncompressed %g, bi-branch %g, all-compressed %g: want uncompressed < bi-branch < all-compressed",
			rep.Eval[0].Perplexity, rep.Eval[2].Perplexity, rep.Eval[1].Perplexity)
	}
}
