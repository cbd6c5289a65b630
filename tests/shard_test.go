package tests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
)

// cskvEnv runs the command with extra environment variables.
func cskvEnv(t *testing.T, dir string, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(cskvBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var errb bytesBuffer
	cmd.Stderr = &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), errb.String()
	} else if err != nil {
		t.Fatalf("running cskv %v: %v", args, err)
	}
	return 0, errb.String()
}

// A sharded run on stories260K — capture, three shard processes (one indexed
// by JOB_COMPLETION_INDEX as on a Kubernetes Indexed Job, one by
// SLURM_ARRAY_TASK_ID as in a Slurm array, one by --shard), merge — writes
// the bytes of cskv train with the same settings in one process; merge
// names a missing shard.
func TestCLIShardsMergeBitIdentical(t *testing.T) {
	dir := t.TempDir()
	model := testassets.Path(t, "models/stories260K.gguf")
	calib := testassets.Path(t, "data/tinystories_calib.txt")
	settings := []string{"--quiet", "--model", model, "--data", calib, "--seq-len", "64", "--calib-chunks", "8",
		"--holdout", "2", "--steps", "5", "--batch", "4", "--save-every", "2"}
	clean := []string{"JOB_COMPLETION_INDEX=", "SLURM_ARRAY_TASK_ID="}
	run := func(env []string, args ...string) {
		t.Helper()
		env = append(append([]string{}, clean...), env...)
		if code, stderr := cskvEnv(t, dir, env, args...); code != 0 {
			t.Fatalf("cskv %v (env %v): exit %d: %s", args, env, code, stderr)
		}
	}
	run(nil, append([]string{"train", "--eval-chunks", "0", "--out", "single"}, settings...)...)
	run(nil, append([]string{"capture", "--shards", "3", "--out", "shared"}, settings...)...)
	run([]string{"JOB_COMPLETION_INDEX=0"}, "train", "--quiet", "--from", "shared")
	run([]string{"SLURM_ARRAY_TASK_ID=1"}, "train", "--quiet", "--from", "shared")

	code, stderr := cskvEnv(t, dir, clean, "merge", "shared", "--out", "merged.safetensors")
	if code == 0 || !strings.Contains(stderr, "shard 2 (layers [4, 5)) is missing") {
		t.Fatalf("merge without shard 2: exit %d: %s", code, stderr)
	}
	code, stderr = cskvEnv(t, dir, clean, "train", "--from", "shared", "--shard", "2", "--k-density", "0.25")
	if code != 2 || !strings.Contains(stderr, "--k-density with --from") {
		t.Fatalf("shard with a problem flag: exit %d: %s", code, stderr)
	}
	run(nil, "train", "--quiet", "--from", "shared", "--shard", "2")
	run(nil, "merge", "--quiet", "shared", "--out", "merged.safetensors")
	want, err := os.ReadFile(filepath.Join(dir, "single", "projections.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "merged.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("merged projections differ from the single-process run (%d vs %d bytes)", len(got), len(want))
	}
}
