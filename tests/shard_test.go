package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	evalText := testassets.Path(t, "data/tinystories_eval.txt")
	run(nil, append([]string{"train", "--eval-data", evalText, "--eval-chunks", "4", "--out", "single"}, settings...)...)
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
	run(nil, "merge", "--quiet", "shared", "--out", "merged.safetensors", "--eval-data", evalText, "--eval-chunks", "4")
	// the report: the same evaluation and memory table, every layer's report
	type report struct {
		Eval, Memory json.RawMessage
		Layers       []struct {
			Layer        int     `json:"layer"`
			KRank        int     `json:"k_rank"`
			VRank        int     `json:"v_rank"`
			CalibKVFinal float64 `json:"calib_kv_final"`
		}
	}
	var reports [2]report
	for i, path := range []string{"single/report.json", "shared/report.json"} {
		raw, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &reports[i]); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	if len(reports[1].Eval) == 0 || string(reports[0].Eval) != string(reports[1].Eval) || string(reports[0].Memory) != string(reports[1].Memory) ||
		fmt.Sprint(reports[0].Layers) != fmt.Sprint(reports[1].Layers) || len(reports[1].Layers) != 5 {
		t.Errorf("merge's report differs from the single run's:\n%+v\n%+v", reports[0], reports[1])
	}
	sameMerged(t, dir, "differ from the single-process run")
}

// A shard process killed (SIGKILL) after a mid-layer checkpoint and started
// again resumes, and the merge still equals the single-process run.
func TestCLIShardKilledResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("SIGKILL test skipped under -short")
	}
	dir := t.TempDir()
	settings := []string{"--quiet", "--model", testassets.Path(t, "models/stories260K.gguf"),
		"--data", testassets.Path(t, "data/tinystories_calib.txt"), "--seq-len", "64", "--calib-chunks", "8",
		"--holdout", "2", "--steps", "60", "--batch", "4", "--save-every", "5"}
	clean := []string{"JOB_COMPLETION_INDEX=", "SLURM_ARRAY_TASK_ID="}
	run := func(args ...string) {
		t.Helper()
		if code, stderr := cskvEnv(t, dir, clean, args...); code != 0 {
			t.Fatalf("cskv %v: exit %d: %s", args, code, stderr)
		}
	}
	run(append([]string{"train", "--eval-chunks", "0", "--out", "single"}, settings...)...)
	run(append([]string{"capture", "--shards", "2", "--out", "shared"}, settings...)...)

	cmd := exec.Command(cskvBin, "train", "--quiet", "--from", "shared", "--shard", "0")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), clean...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m, _ := filepath.Glob(filepath.Join(dir, "shared", "shard-0", "ckpt-L01-S0000[1-4]*")); len(m) > 0 {
			break // mid-layer 1
		}
		select {
		case err := <-exited:
			t.Fatalf("shard 0 ended (%v) before a mid-layer checkpoint of layer 1 was seen", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no mid-layer checkpoint within 60 s")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil {
		t.Fatal("shard 0 finished before it was killed")
	}
	code, stderr := cskvEnv(t, dir, clean, "merge", "shared", "--out", "merged.safetensors")
	if code == 0 || !strings.Contains(stderr, "shard 0") {
		t.Fatalf("merge after the kill: exit %d: %s", code, stderr)
	}
	run("train", "--quiet", "--from", "shared", "--shard", "0") // finds its run.json: resumes
	run("train", "--quiet", "--from", "shared", "--shard", "1")
	run("merge", "--quiet", "shared", "--out", "merged.safetensors")
	sameMerged(t, dir, "after the kill differ from the single-process run")
}

// The same with a non-uniform rank plan: --budget runs the allocation once
// in capture, the three shard processes train its ranks, and merge writes
// the bytes of cskv train --budget in one process.
func TestCLIShardsMergeBudgetPlan(t *testing.T) {
	dir := t.TempDir()
	model := testassets.Path(t, "models/stories260K.gguf")
	calib := testassets.Path(t, "data/tinystories_calib.txt")
	settings := []string{"--quiet", "--model", model, "--data", calib, "--seq-len", "64", "--calib-chunks", "8",
		"--holdout", "2", "--steps", "5", "--batch", "4", "--budget", "0.25"}
	clean := []string{"JOB_COMPLETION_INDEX=", "SLURM_ARRAY_TASK_ID="}
	run := func(env []string, args ...string) {
		t.Helper()
		env = append(append([]string{}, clean...), env...)
		if code, stderr := cskvEnv(t, dir, env, args...); code != 0 {
			t.Fatalf("cskv %v (env %v): exit %d: %s", args, env, code, stderr)
		}
	}
	run(nil, append([]string{"train", "--out", "single"}, settings...)...)
	run(nil, append([]string{"capture", "--shards", "3", "--out", "shared"}, settings...)...)
	run([]string{"JOB_COMPLETION_INDEX=0"}, "train", "--quiet", "--from", "shared")
	run([]string{"SLURM_ARRAY_TASK_ID=1"}, "train", "--quiet", "--from", "shared")
	run(nil, "train", "--quiet", "--from", "shared", "--shard", "2")
	run(nil, "merge", "--quiet", "shared", "--out", "merged.safetensors")

	raw, err := os.ReadFile(filepath.Join(dir, "shared", "plan.json"))
	if err != nil {
		t.Fatal(err)
	}
	var plan struct {
		Ranks []struct {
			KRank int `json:"k_rank"`
			VRank int `json:"v_rank"`
		} `json:"ranks"`
	}
	if err := json.Unmarshal(raw, &plan); err != nil {
		t.Fatalf("plan.json: %v", err)
	}
	uniform := true
	for _, r := range plan.Ranks {
		uniform = uniform && r == plan.Ranks[0]
	}
	if len(plan.Ranks) != 5 || uniform {
		t.Fatalf("capture's plan is not a non-uniform plan of 5 layers: %s", raw)
	}
	sameMerged(t, dir, "differ from cskv train --budget in one process")
}

// sameMerged fails unless dir/merged.safetensors holds the bytes of the
// single-process run's dir/single/projections.safetensors.
func sameMerged(t *testing.T, dir, what string) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(dir, "single", "projections.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "merged.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("merged projections %s (%d vs %d bytes)", what, len(got), len(want))
	}
}
