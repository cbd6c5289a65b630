package tests

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/train"
)

// smallConfig is a quick run on the embedded synthetic model.
func smallConfig(out string) train.Config {
	c := train.Defaults()
	c.SeqLen, c.CalibChunks, c.Holdout = 64, 12, 4
	c.Batch, c.OutSeqs, c.Steps, c.SaveEvery = 4, 1, 10, 4
	c.Out = out
	return c
}

// Resume equivalence: a run interrupted mid-layer and resumed exports the
// same bytes as an uninterrupted run (bit for bit on the CPU).
func TestResumeBitIdentical(t *testing.T) {
	dir := t.TempDir()
	straight := filepath.Join(dir, "straight")
	_, err := train.Run(context.Background(), smallConfig(straight), train.Env{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(straight, "projections.safetensors"))
	if err != nil {
		t.Fatal(err)
	}

	// Interrupt after 25 of the 40 steps (layer 2, step 5), then resume.
	split := filepath.Join(dir, "split")
	ctx, cancel := context.WithCancel(context.Background())
	done := 0
	_, err = train.Run(ctx, smallConfig(split), train.Env{OnStep: func(train.StepInfo) {
		if done++; done == 25 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: err = %v, want context.Canceled", err)
	}
	latest, err := checkpoints.Latest(split)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(latest, "ckpt-L02-S000005") {
		t.Fatalf("latest checkpoint %s, want layer 2 step 5", latest)
	}
	if _, err := os.Stat(filepath.Join(split, "projections.safetensors")); err == nil {
		t.Fatal("an interrupted run wrote the export")
	}
	cfg := smallConfig(split)
	cfg.Resume = true
	_, err = train.Run(context.Background(), cfg, train.Env{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(split, "projections.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("resumed export differs from the uninterrupted one (%d vs %d bytes)", len(got), len(want))
	}
	// cskv export from the run directory (its last checkpoint) gives the same file
	again := filepath.Join(dir, "again.safetensors")
	if err := train.ExportCheckpoint(split, again, train.DTypeF32); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(again); !bytes.Equal(b, want) {
		t.Fatal("export from the last checkpoint differs from the run's own export")
	}
	// a mid-layer checkpoint cannot be exported
	mid := filepath.Join(split, "ckpt-L02-S000005")
	if _, err := os.Stat(mid); err == nil {
		if err := train.ExportCheckpoint(mid, again, train.DTypeF32); err == nil || !strings.Contains(err.Error(), "layers are finished") {
			t.Errorf("export of a mid-layer checkpoint: %v", err)
		}
	}
}

// A problem-defining setting that differs on resume is an error naming it
// and both values; a steering setting only warns.
func TestResumeMismatch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	cfg := smallConfig(dir)
	cfg.Steps = 2
	_, err := train.Run(context.Background(), cfg, train.Env{})
	if err != nil {
		t.Fatal(err)
	}
	bad := cfg
	bad.Resume, bad.Seed = true, 7
	_, err = train.Run(context.Background(), bad, train.Env{})
	if !errors.Is(err, train.ErrMismatch) || !strings.Contains(err.Error(), "seed was 0, now 7") {
		t.Fatalf("seed mismatch: err = %v", err)
	}
	bad = cfg
	bad.Resume, bad.KDensity = true, 0.25
	_, err = train.Run(context.Background(), bad, train.Env{})
	if err == nil || !strings.Contains(err.Error(), "k-density was 0.5, now 0.25") {
		t.Fatalf("density mismatch: err = %v", err)
	}
	bad = cfg
	bad.Resume, bad.Precision = true, linalg.BF16
	_, err = train.Run(context.Background(), bad, train.Env{})
	want := "precision was f32, now bf16" // a resume computes in the run's precision
	if !linalg.HasBF16() {
		want = "--precision bf16"
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("precision mismatch: err = %v, want %q", err, want)
	}
	ok := cfg
	ok.Resume, ok.LR = true, 5e-4
	_, err = train.Run(context.Background(), ok, train.Env{})
	if err != nil {
		t.Fatalf("steering change refused: %v", err)
	}
}

// SIGKILL mid-run, then `cskv train --resume --out DIR` alone: same bytes as
// an uninterrupted run.
func TestKillAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the command three times")
	}
	dir := t.TempDir()
	args := []string{"train", "--quiet", "--steps", "40", "--save-every", "3", "--calib-chunks", "12", "--seq-len", "64",
		"--batch", "4", "--out-seqs", "1", "--holdout", "2"}
	if code, _, stderr := cskv(t, dir, append(args, "--out", "straight")...); code != 0 {
		t.Fatalf("straight run failed (%d): %s", code, stderr)
	}
	want, err := os.ReadFile(filepath.Join(dir, "straight", "projections.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cskvBin, append(args, "--out", "killed")...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// wait for a mid-layer checkpoint of layer 1 or later, then kill -9
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if l, err := checkpoints.Latest(filepath.Join(dir, "killed")); err == nil && filepath.Base(l) >= "ckpt-L01-S000003" {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("no checkpoint appeared")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(dir, "killed", "projections.safetensors")); err == nil {
		t.Skip("the run finished before it could be killed")
	}
	// The run directory records the configuration: --resume --out alone.
	if code, _, stderr := cskv(t, dir, "train", "--quiet", "--resume", "--out", "killed"); code != 0 {
		t.Fatalf("resume failed (%d): %s", code, stderr)
	}
	got, err := os.ReadFile(filepath.Join(dir, "killed", "projections.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("export after SIGKILL + resume differs from the uninterrupted run")
	}
}

// A diverging run stops at the first non-finite loss or gradient with an
// error naming the layer and step, writes no export, and leaves the last good
// checkpoint in place.
func TestNonFiniteStops(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	cfg := smallConfig(dir)
	cfg.LR, cfg.SaveEvery, cfg.Steps = 1e30, 1, 10
	_, err := train.Run(context.Background(), cfg, train.Env{})
	if err == nil || !strings.Contains(err.Error(), "non-finite") || !strings.Contains(err.Error(), "layer 0: step ") {
		t.Fatalf("err = %v, want a non-finite error naming layer 0 and the step", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "projections.safetensors")); err == nil {
		t.Error("a diverged run wrote the export")
	}
	latest, err := checkpoints.Latest(dir)
	if err != nil {
		t.Fatalf("no checkpoint kept: %v", err)
	}
	if _, err := checkpoints.Load(latest); err != nil {
		t.Errorf("the kept checkpoint does not load: %v", err)
	}
}
