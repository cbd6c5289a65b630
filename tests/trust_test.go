package tests

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/runlock"
	"github.com/cskv/cskv/train"
)

// TestResumeFallsBackPastDamagedCheckpoint: with the newest checkpoint's
// tensors truncated, --resume warns naming it and the reason, continues from
// the previous one and still exports the uninterrupted run's bytes; with
// every checkpoint damaged it stops with an error listing them all.
func TestResumeFallsBackPastDamagedCheckpoint(t *testing.T) {
	dir := t.TempDir()
	cfg := smallConfig(filepath.Join(dir, "run"))
	cfg.Keep = 3
	res, err := train.Run(context.Background(), cfg, train.Env{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(res.Projections)
	if err != nil {
		t.Fatal(err)
	}
	list, err := checkpoints.List(cfg.Out)
	if err != nil || len(list) != 3 {
		t.Fatalf("checkpoints %v, %v", list, err)
	}
	newest := list[2]
	tf := filepath.Join(newest, checkpoints.TensorsFile)
	raw, _ := os.ReadFile(tf)
	os.WriteFile(tf, raw[:len(raw)/3], 0o644)
	os.Remove(res.Projections)

	var logBuf bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logBuf)
	resume := cfg
	resume.Resume = true
	res, err = train.Run(context.Background(), resume, train.Env{Log: log})
	if err != nil {
		t.Fatalf("resume past a damaged checkpoint: %v", err)
	}
	if !strings.Contains(logBuf.String(), "skipping an invalid checkpoint") || !strings.Contains(logBuf.String(), filepath.Base(newest)) ||
		!strings.Contains(logBuf.String(), "corrupt") {
		t.Errorf("no warning naming %s and the reason:\n%s", filepath.Base(newest), logBuf.String())
	}
	if got, _ := os.ReadFile(res.Projections); !bytes.Equal(got, want) {
		t.Fatal("export after falling back differs from the uninterrupted run")
	}

	list, _ = checkpoints.List(cfg.Out)
	for _, p := range list {
		os.Remove(filepath.Join(p, checkpoints.StateFile))
	}
	_, err = train.Run(context.Background(), resume, train.Env{Log: log})
	if err == nil || !strings.Contains(err.Error(), "no valid checkpoint among") {
		t.Fatalf("every checkpoint damaged: %v", err)
	}
	for _, p := range list {
		if !strings.Contains(err.Error(), filepath.Base(p)) {
			t.Errorf("error does not list %s: %v", filepath.Base(p), err)
		}
	}
}

// startTrain starts cskv train in dir and returns the command; the caller
// kills it.
func startTrain(t *testing.T, dir string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(cskvBin, args...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// waitFor polls until cond holds (or fails the test after a minute).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOneProcessPerRunDirectory: while a run holds its directory, --resume
// and --force from a second process fail naming the directory and the
// holder's PID; after the holder is killed (SIGKILL, lock file left behind)
// the directory is free again.
func TestOneProcessPerRunDirectory(t *testing.T) {
	dir := t.TempDir()
	args := []string{"train", "--quiet", "--steps", "100000", "--save-every", "2", "--calib-chunks", "8", "--seq-len", "64", "--batch", "2", "--out-seqs", "1", "--holdout", "0"}
	holder := startTrain(t, dir, append(args, "--out", "run")...)
	waitFor(t, "a first checkpoint", func() bool { _, err := checkpoints.Latest(filepath.Join(dir, "run")); return err == nil })
	want := "run directory run is in use by process " + strconv.Itoa(holder.Process.Pid)
	for _, extra := range [][]string{{"--resume"}, {"--force"}} {
		code, _, stderr := cskv(t, dir, append(append(args, "--out", "run"), extra...)...)
		if code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("%v while another process runs: exit %d, %s; want %q", extra, code, stderr, want)
		}
	}
	holder.Process.Kill()
	holder.Wait()
	if _, err := os.Stat(filepath.Join(dir, "run", runlock.FileName)); err != nil {
		t.Fatalf("lock file: %v", err)
	}
	l, err := runlock.Acquire(filepath.Join(dir, "run"))
	if err != nil {
		t.Fatalf("the dead holder's lock still blocks: %v", err)
	}
	l.Release()
}

// TestSIGTERMStopsLikeCtrlC: SIGTERM during layer 1 stops the run cleanly
// (exit 130, "interrupted", as for Ctrl-C) and --resume finishes with the
// bytes of an uninterrupted run.
func TestSIGTERMStopsLikeCtrlC(t *testing.T) {
	dir := t.TempDir()
	args := []string{"train", "--quiet", "--steps", "60", "--save-every", "1000", "--calib-chunks", "8", "--seq-len", "64", "--batch", "4", "--out-seqs", "1", "--holdout", "0", "--eval-chunks", "1"}
	if code, _, stderr := cskv(t, dir, append(args, "--out", "straight")...); code != 0 {
		t.Fatalf("straight run (exit %d): %s", code, stderr)
	}
	want, _ := os.ReadFile(filepath.Join(dir, "straight", "projections.safetensors"))
	cmd := exec.Command(cskvBin, append(args, "--out", "term")...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// After layer 0's checkpoint, in the middle of layer 1.
	waitFor(t, "layer 0's checkpoint", func() bool {
		l, err := checkpoints.Latest(filepath.Join(dir, "term"))
		return err == nil && filepath.Base(l) >= "ckpt-L01-S000000"
	})
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 || !strings.Contains(stderr.String(), "interrupted") {
		if err == nil {
			t.Skip("the run finished before SIGTERM arrived")
		}
		t.Fatalf("after SIGTERM: %v, %s", err, stderr.String())
	}
	if code, _, se := cskv(t, dir, "train", "--quiet", "--resume", "--out", "term"); code != 0 {
		t.Fatalf("resume (exit %d): %s", code, se)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "term", "projections.safetensors")); !bytes.Equal(got, want) {
		t.Fatal("export after SIGTERM + resume differs from the uninterrupted run")
	}
}

// TestKillAnywhere: 20 runs, each killed with SIGKILL at a seeded
// pseudo-random moment of an uninterrupted run's timeline (measured first,
// the shorter of two runs),
// so that the kills fall across capture, init, training, checkpoint writing
// and export; each is then finished by `cskv train --resume --out DIR`
// alone and must export the uninterrupted run's bytes. A run killed before
// it recorded anything (no run.json yet) is started again as it was.
func TestKillAnywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the command about 60 times")
	}
	dir := t.TempDir()
	args := []string{"train", "--quiet", "--steps", "12", "--save-every", "2", "--keep", "2", "--calib-chunks", "8", "--seq-len", "64",
		"--batch", "4", "--out-seqs", "1", "--holdout", "2", "--eval-chunks", "1"}
	// The timeline is the shorter of two uninterrupted runs: on a machine
	// shared with other work one slow run would stretch it past the killed
	// runs, which then finish before their moment.
	var total time.Duration
	var want []byte
	for i, out := range []string{"straight", "straight-again"} {
		start := time.Now()
		if code, _, stderr := cskv(t, dir, append(args, "--out", out)...); code != 0 {
			t.Fatalf("straight run (exit %d): %s", code, stderr)
		}
		if d := time.Since(start); i == 0 || d < total {
			total = d
		}
		got, err := os.ReadFile(filepath.Join(dir, out, "projections.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && !bytes.Equal(got, want) {
			t.Fatal("two uninterrupted runs exported different bytes")
		}
		want = got
	}
	r := rand.New(rand.NewPCG(13, 20))
	kills := 0
	phases := map[string]int{}
	for i := range 20 {
		out := "killed-" + strconv.Itoa(i)
		at := time.Duration((0.02 + 0.96*r.Float64()) * float64(total))
		cmd := exec.Command(cskvBin, append(args, "--out", out)...)
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run %d failed by itself: %v", i, err)
			}
		case <-time.After(at):
			cmd.Process.Kill()
			<-done
			kills++
		}
		phases[phaseOf(filepath.Join(dir, out))]++
		resume := []string{"train", "--quiet", "--resume", "--out", out}
		if _, err := os.Stat(filepath.Join(dir, out, "run.json")); err != nil {
			resume = append(args, "--out", out, "--force")
		}
		if code, _, stderr := cskv(t, dir, resume...); code != 0 {
			t.Fatalf("run %d killed at %v: %v (exit %d): %s", i, at, resume, code, stderr)
		}
		got, err := os.ReadFile(filepath.Join(dir, out, "projections.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("run %d killed at %v of %v: the export after resuming differs from the uninterrupted run", i, at, total)
		}
		os.RemoveAll(filepath.Join(dir, out))
	}
	t.Logf("%d of 20 runs killed (a whole run takes %v); state at the kill: %v", kills, total, phases)
	if kills < 15 {
		t.Errorf("only %d of 20 runs were killed: the moments do not cover the run", kills)
	}
}

// phaseOf says how far a killed run had got, from what its directory holds.
func phaseOf(dir string) string {
	switch l, err := checkpoints.Latest(dir); {
	case fileExists(filepath.Join(dir, "projections.safetensors")):
		return "exported"
	case err != nil && fileExists(filepath.Join(dir, "run.json")):
		return "before the first checkpoint"
	case err != nil:
		return "before run.json"
	default:
		return "at " + filepath.Base(l)[:8]
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
