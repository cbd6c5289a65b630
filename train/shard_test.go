package train

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
)

// shardConfig is a quick run on stories260K (5 layers).
func shardConfig(t *testing.T) Config {
	c := Defaults()
	c.Model = testassets.Path(t, "models/stories260K.gguf")
	c.Data = testassets.Path(t, "data/tinystories_calib.txt")
	c.SeqLen, c.CalibChunks, c.Holdout = 64, 8, 2
	c.Batch, c.OutSeqs, c.Steps, c.SaveEvery = 4, 4, 5, 2
	return c
}

// A run split into shards [0,2) [2,4) [4,5), each trained from its captured
// stream, merges into the same bytes as the single-process run; Merge
// refuses a missing, unfinished, duplicate or foreign shard, naming it.
func TestShardsMergeBitIdentical(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	single := shardConfig(t)
	single.Out = filepath.Join(tmp, "single")
	if _, err := Run(ctx, single, Env{}); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(single.Out, "projections.safetensors"))
	if err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(tmp, "sharded")
	man, err := CaptureShards(ctx, shardConfig(t), 0, []int{0, 2, 4, 5}, dir, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if len(man.Streams) != 3 {
		t.Fatalf("%d streams, want 3", len(man.Streams))
	}
	out := filepath.Join(tmp, "merged.safetensors")
	mergeErr := func(want string) {
		t.Helper()
		_, err := Merge(dir, out)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("merge: err = %v, want one containing %q", err, want)
		}
	}
	for k := 0; k < 2; k++ {
		cfg, err := ShardConfig(dir, k)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Run(ctx, cfg, Env{})
		if err != nil {
			t.Fatalf("shard %d: %v", k, err)
		}
		if res.Projections != "" || len(res.Layers) != 2 || res.Layers[0].Layer != 2*k {
			t.Fatalf("shard %d: projections %q, layers %+v", k, res.Projections, res.Layers)
		}
	}
	mergeErr("shard 2 (layers [4, 5)) is missing")

	// shard 2 interrupted mid-layer: unfinished; then resumed.
	cfg, err := ShardConfig(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	steps := 0
	if _, err := Run(cctx, cfg, Env{OnStep: func(StepInfo) {
		if steps++; steps == 3 {
			cancel()
		}
	}}); err == nil {
		t.Fatal("interrupted shard: no error")
	}
	mergeErr("shard 2")
	mergeErr("is unfinished")
	cfg.Resume = true
	if _, err := Run(ctx, cfg, Env{}); err != nil {
		t.Fatalf("resumed shard 2: %v", err)
	}
	if _, err := Merge(dir, out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("merged projections differ from the single-process run (%d vs %d bytes)", len(got), len(want))
	}

	// A stray extra shard directory.
	if err := os.Mkdir(filepath.Join(dir, "shard-3"), 0o755); err != nil {
		t.Fatal(err)
	}
	mergeErr("shard-3 is not one of the 3 shards")
	os.Remove(filepath.Join(dir, "shard-3"))

	// A shard of another run (other settings) in place of shard 1.
	other := shardConfig(t)
	other.Seed = 7
	odir := filepath.Join(tmp, "other")
	if _, err := CaptureShards(ctx, other, 3, nil, odir, Env{}); err != nil {
		t.Fatal(err)
	}
	ocfg, err := ShardConfig(odir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, ocfg, Env{}); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(ShardDir(dir, 1))
	if err := os.Rename(ShardDir(odir, 1), ShardDir(dir, 1)); err != nil {
		t.Fatal(err)
	}
	mergeErr("shard 1")
	mergeErr("other settings")

	// A shard of another model (the same weights in a v3 GGUF: another file
	// digest) in place of shard 0.
	foreign := shardConfig(t)
	foreign.Model = testassets.Path(t, "models/stories260K-v3.gguf")
	fdir := filepath.Join(tmp, "foreign")
	if _, err := CaptureShards(ctx, foreign, 3, nil, fdir, Env{}); err != nil {
		t.Fatal(err)
	}
	fcfg, err := ShardConfig(fdir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, fcfg, Env{}); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(ShardDir(dir, 0))
	if err := os.Rename(ShardDir(fdir, 0), ShardDir(dir, 0)); err != nil {
		t.Fatal(err)
	}
	mergeErr("shard 0")
	mergeErr("is of another model")
}

// With --budget the capture allocates once, writes DIR/plan.json, and the
// shards train with its ranks: the merge equals the single-process run
// under the same budget.
func TestShardsBudgetPlan(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	single := shardConfig(t)
	single.Budget, single.Out = 0.25, filepath.Join(tmp, "single")
	res, err := Run(ctx, single, Env{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(res.Projections)
	if err != nil {
		t.Fatal(err)
	}
	cfg := shardConfig(t)
	cfg.Budget = 0.25
	dir := filepath.Join(tmp, "sharded")
	man, err := CaptureShards(ctx, cfg, 2, nil, dir, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if man.Plan == "" || fmt.Sprint(man.Run.KRanks, man.Run.VRanks) != fmt.Sprint(res.Plan.KRanks(), res.Plan.VRanks()) {
		t.Fatalf("capture plan %q ranks %v %v, single run's %v %v", man.Plan, man.Run.KRanks, man.Run.VRanks, res.Plan.KRanks(), res.Plan.VRanks())
	}
	for k := 0; k < 2; k++ {
		sc, err := ShardConfig(dir, k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(ctx, sc, Env{}); err != nil {
			t.Fatalf("shard %d: %v", k, err)
		}
	}
	out := filepath.Join(tmp, "merged.safetensors")
	if _, err := Merge(dir, out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("merged projections under the budget differ from the single-process run (%d vs %d bytes)", len(got), len(want))
	}
}

// A capture interrupted after its second stream refuses to serve shards,
// and run again continues from that stream to the same files as an
// uninterrupted capture; a directory of another capture is refused.
func TestCaptureResumes(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	whole, err := CaptureShards(ctx, shardConfig(t), 3, nil, filepath.Join(tmp, "whole"), Env{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "split")
	cctx, cancel := context.WithCancel(ctx)
	_, err = CaptureShards(cctx, shardConfig(t), 3, nil, dir, Env{OnPhase: func(phase string, l int) {
		if phase == "advance" && l == 2 { // stream 1 (layer 2) is written
			cancel()
		}
	}})
	if err == nil {
		t.Fatal("interrupted capture: no error")
	}
	if _, err := ShardConfig(dir, 0); err == nil || !strings.Contains(err.Error(), "the capture is unfinished (2 of 3 streams)") {
		t.Fatalf("shard of an unfinished capture: err = %v", err)
	}
	var phases []string
	again, err := CaptureShards(ctx, shardConfig(t), 3, nil, dir, Env{OnPhase: func(phase string, l int) {
		phases = append(phases, fmt.Sprint(phase, l))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(phases) != "[advance2 advance3 capture4]" {
		t.Errorf("resumed capture's phases %v: want it to start from the stream at layer 2", phases)
	}
	if fmt.Sprint(again.Streams) != fmt.Sprint(whole.Streams) {
		t.Fatalf("resumed capture's streams %v, uninterrupted %v", again.Streams, whole.Streams)
	}
	other := shardConfig(t)
	other.CalibChunks = 9
	if _, err := CaptureShards(ctx, other, 3, nil, dir, Env{}); err == nil || !strings.Contains(err.Error(), "holds another capture") {
		t.Fatalf("capture over another one: err = %v", err)
	}
}
