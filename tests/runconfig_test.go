package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cskv/cskv/checkpoints"
)

// smallTrain are flags of a quick run on the synthetic model, all different
// from the defaults where that is cheap, so that a reload that lost one
// would change the bytes.
var smallTrain = []string{"train", "--quiet", "--steps", "6", "--save-every", "3", "--calib-chunks", "8", "--seq-len", "64",
	"--batch", "4", "--out-seqs", "1", "--holdout", "2", "--lr", "0.002", "--k-density", "0.5", "--seed", "7", "--eval-chunks", "2"}

// TestCLIConfigFile: DIR/config.yaml reloads to the same run (same bytes);
// flags on the command line override the file; an unknown key is an error
// naming it; --resume needs nothing but --out, refuses a changed problem
// setting and warns about a changed steering setting.
func TestCLIConfigFile(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := cskv(t, dir, append(smallTrain, "--out", "a")...); code != 0 {
		t.Fatalf("train (exit %d): %s", code, stderr)
	}
	want, err := os.ReadFile(filepath.Join(dir, "a", "projections.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join("a", "config.yaml")
	raw, err := os.ReadFile(filepath.Join(dir, cfgFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"steps: 6\n", "k-density: 0.5\n", "lr: 0.002\n", "seed: 7\n"} {
		if !strings.Contains(string(raw), line) {
			t.Errorf("config.yaml lacks %q", line)
		}
	}
	if strings.Contains(string(raw), "\nout:") || strings.Contains(string(raw), "\nresume:") {
		t.Errorf("config.yaml records how to run, not only what: %s", raw)
	}
	if code, _, stderr := cskv(t, dir, "train", "--quiet", "--config", cfgFile, "--out", "b"); code != 0 {
		t.Fatalf("train --config (exit %d): %s", code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "b", "projections.safetensors")); !bytes.Equal(got, want) {
		t.Fatal("train --config DIR/config.yaml did not reproduce the run")
	}
	// The command line wins: --steps 5 gives another result than the file's 6.
	if code, _, stderr := cskv(t, dir, "train", "--quiet", "--config", cfgFile, "--steps", "5", "--out", "c"); code != 0 {
		t.Fatalf("train --config --steps (exit %d): %s", code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "c", "projections.safetensors")); bytes.Equal(got, want) {
		t.Fatal("--steps on the command line did not override the config file")
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("steps: 6\nk-densty: 0.5\n"), 0o644)
	code, _, stderr := cskv(t, dir, "train", "--config", bad, "--out", "d")
	if code != 2 || !strings.Contains(stderr, `line 2: unknown key "k-densty"`) {
		t.Errorf("unknown key: exit %d, %s", code, stderr)
	}
	os.WriteFile(bad, []byte("k-density: 0.5\nk-densty: 0.5\n"), 0o644)
	for _, cmd := range []string{"init", "allocate"} { // the other commands that take --config
		code, _, stderr := cskv(t, dir, cmd, "--config", bad, "--out", "e")
		if code != 2 || !strings.Contains(stderr, `line 2: unknown key "k-densty"`) {
			t.Errorf("%s --config with an unknown key: exit %d, %s", cmd, code, stderr)
		}
	}

	// The run's factors for the reference code, straight from the run
	// directory (its recorded model gives the head shape), and back.
	code, stdout, stderr := cskv(t, dir, "export", "--format", "cskv-ref", "--checkpoint", "a", "--out", "ref")
	if code != 0 || !strings.Contains(stdout, "density_k_0.5_v_0.5_quant_k_16_v_16__k.ckpt") {
		t.Fatalf("export --format cskv-ref --checkpoint a (exit %d): %s %s", code, stdout, stderr)
	}
	if code, _, stderr := cskv(t, dir, "import", "--quiet", "--from", filepath.Join("ref", "density_k_0.5_v_0.5_quant_k_16_v_16__v.ckpt"), "--out", "back.safetensors"); code != 0 {
		t.Fatalf("import (exit %d): %s", code, stderr)
	}
	orig, err1 := checkpoints.ReadProjections(filepath.Join(dir, "a", "projections.safetensors"))
	back, err2 := checkpoints.ReadProjections(filepath.Join(dir, "back.safetensors"))
	if err1 != nil || err2 != nil || !reflect.DeepEqual(orig.Layers, back.Layers) {
		t.Fatalf("run → .ckpt → import changed the factors (%v, %v)", err1, err2)
	}

	// Resume of the finished run from the directory alone: same export.
	if code, _, stderr := cskv(t, dir, "train", "--quiet", "--resume", "--out", "a"); code != 0 {
		t.Fatalf("resume (exit %d): %s", code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "a", "projections.safetensors")); !bytes.Equal(got, want) {
		t.Fatal("resume of a finished run changed its export")
	}
	code, _, stderr = cskv(t, dir, "train", "--resume", "--out", "a", "--k-density", "0.25")
	if code != 1 || !strings.Contains(stderr, "k-density was 0.5, now 0.25") {
		t.Errorf("problem setting changed on resume: exit %d, %s", code, stderr)
	}
	code, _, stderr = cskv(t, dir, "train", "--resume", "--out", "a", "--keep", "5")
	if code != 0 || !strings.Contains(stderr, "steering setting changed") || !strings.Contains(stderr, "keep") {
		t.Errorf("steering setting changed on resume: exit %d, %s", code, stderr)
	}
	code, _, stderr = cskv(t, dir, "train", "--resume", "--out", "nothing-here")
	if code != 1 || !strings.Contains(stderr, "not a cskv run directory") {
		t.Errorf("resume of an empty directory: exit %d, %s", code, stderr)
	}
}
