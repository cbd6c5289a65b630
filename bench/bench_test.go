package bench

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

// The counts at the Llama-3-8B GQA shape as issue 11 states them,
// independently: 81.6 GFLOP for the KV step, ≈ 305 with the output term.
func TestFLOPCounts(t *testing.T) {
	s := graph.ShapeLlama3_8B
	if kv := KVFLOPs(s) / 1e9; math.Abs(kv-81.6) > 0.05 {
		t.Errorf("KVFLOPs = %.2f GFLOP, want 81.6", kv)
	}
	if all := (KVFLOPs(s) + OutFLOPs(s, OutSeqs(s))) / 1e9; math.Abs(all-305) > 1 {
		t.Errorf("KV + output FLOPs = %.1f GFLOP, want ≈ 305", all)
	}
	// One layer of Llama-2-7B on T tokens: 2·T·(4·D² + 3·D·F) + 2·T²·D.
	c := ForwardShape.Config
	want := 2*512*(4*4096*4096+3*4096*11008.0) + 2*512*512*4096.0
	if got := ForwardFLOPs(c, 1, 512); got != want {
		t.Errorf("ForwardFLOPs = %g, want %g", got, want)
	}
}

// TestRows runs each kind of row at small shapes and checks that the
// derived columns follow from the measured ones.
func TestRows(t *testing.T) {
	ctx := context.Background()
	peaks, err := Peaks(ctx, [][3]int{{64, 96, 128}}, nil, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	if len(peaks) == 0 || peaks[0].Precision != linalg.F32 || !(peaks[0].GFLOPs > 0) {
		t.Fatalf("peaks %+v: want f32 first, positive", peaks)
	}
	probe, err := linalg.NewProbe(peaks[0])
	if err != nil {
		t.Fatal(err)
	}
	timing := Timing{Steps: 1, Probe: probe}
	step, err := Step(ctx, graph.ShapeStories260K, "kv+out", timing)
	if err != nil {
		t.Fatal(err)
	}
	c := model.Config{Arch: "llama", Hidden: 64, Layers: 1, Heads: 8, KVHeads: 4, HeadDim: 8, FFN: 172, Vocab: 32, ContextLength: 512, RopeBase: 10000, RMSEps: 1e-5}
	fwd, err := Forward(ctx, "tiny", c, 64, timing)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Row{step, fwd} {
		r.SetFraction(peaks)
		if r.MsPerStep <= 0 || math.Abs(r.GFLOPs-r.GFLOP/(r.MsPerStep/1e3))/r.GFLOPs > 1e-9 ||
			math.Abs(r.Fraction-r.GFLOPs/peaks[0].GFLOPs)/r.Fraction > 1e-9 || r.Precision != "f32" {
			t.Errorf("row %+v: columns inconsistent (peak %.1f GFLOP/s)", r, peaks[0].GFLOPs)
		}
		// The probe's samples, taken beside the steps.
		if !(r.PeakAdjacent > 0) || math.Abs(r.FractionAdjacent-r.GFLOPs/r.PeakAdjacent)/r.FractionAdjacent > 1e-9 ||
			math.Abs(r.ProductFractionAdjacent-r.ProductGFLOPs/r.PeakAdjacent)/r.ProductFractionAdjacent > 1e-9 {
			t.Errorf("row %s: adjacent peak %g GFLOP/s, fractions %g, products %g", r.Loss, r.PeakAdjacent, r.FractionAdjacent, r.ProductFractionAdjacent)
		}
	}
	if want := (KVFLOPs(graph.ShapeStories260K) + OutFLOPs(graph.ShapeStories260K, 2)) / 1e9; step.GFLOP != want {
		t.Errorf("kv+out row counts %g GFLOP, want %g", step.GFLOP, want)
	}
	// The precomputed step does not run the K and V targets; every row
	// times its products.
	step.SetFraction(peaks)
	if want := step.GFLOP - TargetFLOPs(graph.ShapeStories260K)/1e9; math.Abs(step.GFLOPPrecomp-want) > 1e-12 ||
		math.Abs(step.FractionPrecomp-step.GFLOPPrecomp/(step.MsPrecomp/1e3)/peaks[0].GFLOPs)/step.FractionPrecomp > 1e-9 {
		t.Errorf("precomputed columns %g GFLOP, %g of peak: want %g GFLOP at %g ms", step.GFLOPPrecomp, step.FractionPrecomp, want, step.MsPrecomp)
	}
	if f := step.GFLOPPrecomp / (step.MsPrecomp / 1e3) / step.PeakAdjacent; math.Abs(step.FractionPrecompAdjacent-f)/f > 1e-9 {
		t.Errorf("precomputed fraction of the adjacent peak %g, want %g", step.FractionPrecompAdjacent, f)
	}
	// No probe, no adjacent columns.
	bare, err := Step(ctx, graph.ShapeStories260K, "kv", Timing{Steps: 1})
	if err != nil {
		t.Fatal(err)
	}
	if bare.SetFraction(peaks); bare.PeakAdjacent != 0 || bare.FractionAdjacent != 0 || bare.FractionPrecompAdjacent != 0 {
		t.Errorf("row without a probe: adjacent peak %g, fractions %g / %g", bare.PeakAdjacent, bare.FractionAdjacent, bare.FractionPrecompAdjacent)
	}
	for _, r := range []Row{step, fwd} {
		r.SetFraction(peaks)
		if !(r.ProductGFLOPs > 0) || math.Abs(r.ProductFraction-r.ProductGFLOPs/peaks[0].GFLOPs) > 1e-12 {
			t.Errorf("row %s: products %g GFLOP/s, %g of peak", r.Loss, r.ProductGFLOPs, r.ProductFraction)
		}
	}
	if _, err := Step(ctx, graph.ShapeStories260K, "out", timing); err == nil {
		t.Error("loss \"out\": no error")
	}
}

// TestSuiteSurvey checks that the survey measures the peak at the rows'
// heavy products too: against a tiny product as the only peak shape, the
// peak of the precision in use is found at one of the row's own shapes,
// and without the survey at the tiny one. Rows are emitted in order, each
// with its fraction of the returned peak.
func TestSuiteSurvey(t *testing.T) {
	tiny := [3]int{8, 8, 8}
	for _, survey := range []bool{false, true} {
		s := Suite{Shapes: []graph.BenchShape{graph.ShapeStories260K}, Losses: []string{"kv"}, Steps: 1,
			PeakShapes: [][3]int{tiny}, PeakSeconds: 0.02, Survey: survey}
		var rows []Row
		peaks, err := s.Run(context.Background(), func(r Row) error { rows = append(rows, r); return nil })
		if err != nil {
			t.Fatal(err)
		}
		var cur linalg.PeakResult
		for _, p := range peaks {
			if p.Precision == linalg.CurrentPrecision() {
				cur = p
			}
		}
		got := [3]int{cur.M, cur.N, cur.K}
		if len(rows) != 1 || rows[0].Loss != "kv" || !(rows[0].Fraction > 0) ||
			math.Abs(rows[0].Fraction-rows[0].GFLOPs/cur.GFLOPs)/rows[0].Fraction > 1e-9 {
			t.Fatalf("survey %v: rows %+v against peak %+v", survey, rows, cur)
		}
		heavy := rows[0].products.Heavy(HeavyShare)
		if survey && !slices.Contains(heavy, linalg.ProductShape{M: got[0], N: got[1], K: got[2]}) {
			t.Errorf("survey: peak measured at %v, not at one of the row's heavy products %v", got, heavy)
		}
		if !survey && got != tiny {
			t.Errorf("no survey: peak measured at %v, want %v", got, tiny)
		}
	}
}
