package train

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cskv/cskv/checkpoints"
)

// --out-window-alt trains the alternate steps at another bi-branch window:
// one step is the plain run, three steps differ from both plain windows and
// from another cycle, and a run interrupted after an alternate step resumes
// to the same bytes.
func TestOutWindowAlt(t *testing.T) {
	dir := t.TempDir()
	config := func(name string, steps, w, alt, altSteps int) Config {
		c := Defaults()
		c.SeqLen, c.CalibChunks, c.Holdout, c.Batch, c.OutSeqs = 32, 4, 1, 2, 2
		c.KRank, c.VRank, c.SaveEvery = 2, 6, 1
		c.Steps, c.OutWindow, c.OutWindowAlt, c.OutWindowAltSteps = steps, w, alt, altSteps
		c.Out = filepath.Join(dir, name)
		return c
	}
	run := func(c Config) string {
		t.Helper()
		res, err := Run(context.Background(), c, Env{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Projections
	}
	factors := func(path string) []float32 { // every factor, in layer order
		t.Helper()
		p, err := checkpoints.ReadProjections(path)
		if err != nil {
			t.Fatal(err)
		}
		var all []float32
		for _, f := range p.Layers {
			all = slices.Concat(all, f.Ak, f.Bk, f.Av, f.Bv)
		}
		return all
	}
	if !slices.Equal(factors(run(config("one-alt", 1, 0, 8, 0))), factors(run(config("one", 1, 0, 0, 0)))) {
		t.Error("one step with --out-window-alt differs from the plain run")
	}
	mixedPath := run(config("mixed", 3, 0, 8, 0))
	mixed := factors(mixedPath)
	for _, c := range []Config{config("w0", 3, 0, 0, 0), config("w8", 3, 8, 0, 0), config("cycle2", 3, 0, 8, 2)} {
		if slices.Equal(mixed, factors(run(c))) {
			t.Errorf("alternating windows equal %s", filepath.Base(c.Out))
		}
	}
	p, err := checkpoints.ReadProjections(mixedPath)
	if err != nil {
		t.Fatal(err)
	}
	if p.Meta["out_window_alt"] != "8" || p.Meta["out_window_alt_steps"] != "1" {
		t.Errorf("metadata out_window_alt %q out_window_alt_steps %q", p.Meta["out_window_alt"], p.Meta["out_window_alt_steps"])
	}
	want, err := os.ReadFile(mixedPath)
	if err != nil {
		t.Fatal(err)
	}
	split := config("split", 3, 0, 8, 0)
	ctx, cancel := context.WithCancel(context.Background())
	steps := 0
	_, err = Run(ctx, split, Env{OnStep: func(StepInfo) {
		if steps++; steps == split.Steps+2 { // layer 1 after its alternate step
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	split.Resume = true
	res, err := Run(context.Background(), split, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(res.Projections); !bytes.Equal(got, want) {
		t.Error("resumed --out-window-alt run differs from the uninterrupted one")
	}
	bad := config("bad", 3, 0, -1, 0)
	if err := bad.Validate(); err == nil {
		t.Error("--out-window-alt -1 accepted")
	}
}
