package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/train"
)

// Every bad input is a clear error naming the flag, file or value, with a
// non-zero exit status and no output file.
func TestCLIBadInput(t *testing.T) {
	dir := t.TempDir()
	model := testassets.Path(t, "models/stories260K.gguf")
	calib := testassets.Path(t, "data/tinystories_calib.txt")
	corrupt := filepath.Join(dir, "corrupt.gguf")
	raw, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(corrupt, raw[:5000], 0o644)
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, []byte("\n<|endoftext|>\n"), 0o644)
	tiny := filepath.Join(dir, "tiny.txt")
	os.WriteFile(tiny, []byte("Once upon a time there was a cat.\n<|endoftext|>\n"), 0o644)
	badIDs := filepath.Join(dir, "bad.ids")
	os.WriteFile(badIDs, []byte("1 2 3 9999"), 0o644)
	otherRun := filepath.Join(dir, "other")
	os.MkdirAll(otherRun, 0o755)
	os.WriteFile(filepath.Join(otherRun, "run.json"), []byte("{}"), 0o644)

	cases := []struct {
		name string
		args []string
		code int
		want string
		out  string // a file that must not exist afterwards
	}{
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`, ""},
		{"bad flag", []string{"eval", "--no-such-flag"}, 2, "no-such-flag", ""},
		{"density", []string{"init", "--k-density", "1.5", "--out", "p.safetensors"}, 2, "--k-density 1.5", "p.safetensors"},
		{"rank", []string{"init", "--model", model, "--data", calib, "--calib-chunks", "4", "--k-rank", "33", "--out", "p.safetensors"}, 1, "--k-rank 33 outside [1, kv_dim 32]", "p.safetensors"},
		{"init name", []string{"init", "--init", "pca", "--out", "p.safetensors"}, 2, `invalid value "pca" for flag -init: want svd, asvd or whiten`, "p.safetensors"},
		{"bits", []string{"train", "--k-bits", "5", "--out", "r"}, 2, "--k-bits 5", "r"},
		{"steps", []string{"train", "--steps", "-1", "--out", "r"}, 2, "--steps -1", "r"},
		{"zero steps", []string{"train", "--steps", "0", "--out", "r"}, 2, "--steps 0", "r"},
		{"lambdas", []string{"train", "--lambda-kv", "0", "--lambda-out", "0", "--out", "r"}, 2, "both zero", "r"},
		{"batch", []string{"train", "--batch", "64", "--calib-chunks", "8", "--out", "r"}, 2, "--batch 64", "r"},
		{"quant window", []string{"train", "--k-bits", "4", "--quant-window", "0", "--out", "r"}, 2, "--quant-window 0", "r"},
		{"window vs groups", []string{"train", "--k-bits", "4", "--window", "16", "--out", "r"}, 2, "--window 16 is not a multiple of --quant-window 32", "r"},
		{"compare bits", []string{"compare", "--k-bits", "4"}, 2, "--k-bits: compare sets the bits itself", ""},
		// compare trains, so its error names --batch, a flag it has
		{"compare batch", []string{"compare", "--calib-chunks", "4", "--batch", "8"}, 2, "--batch 8: larger than the 4 calibration sequences", ""},
		{"precision", []string{"eval", "--model", model, "--data", calib, "--precision", "fp16"}, 2, `invalid value "fp16" for flag -precision: unknown precision "fp16"`, ""},
		{"data format", []string{"eval", "--model", model, "--data", calib, "--data-format", "csv"}, 2, `invalid value "csv" for flag -data-format: want auto, text, ids or bin`, ""},
		{"export dtype", []string{"export", "--checkpoint", dir, "--out", "p.safetensors", "--dtype", "f64"}, 2, `invalid value "f64" for flag -dtype: want f32, f16 or bf16`, "p.safetensors"},
		{"stray argument", []string{"eval", "extra"}, 2, "this command takes only flags", ""},
		{"missing model", []string{"eval", "--model", filepath.Join(dir, "nope.gguf"), "--data", calib}, 1, "nope.gguf", ""},
		{"corrupt model", []string{"eval", "--model", corrupt, "--data", calib}, 1, "corrupt.gguf", ""},
		{"empty data", []string{"eval", "--model", model, "--data", empty}, 1, "no data", ""},
		{"seq len > data", []string{"eval", "--model", model, "--data", tiny}, 1, "sequence length 512 is larger than the data", ""},
		{"id outside vocab", []string{"eval", "--model", model, "--data", badIDs, "--seq-len", "2"}, 1, "token id 9999", ""},
		{"too few chunks", []string{"init", "--model", model, "--data", tiny, "--seq-len", "4", "--calib-chunks", "5000", "--out", "p.safetensors"}, 1, "too little calibration data", "p.safetensors"},
		{"out holds another run", []string{"train", "--steps", "1", "--out", otherRun}, 1, "holds another run", ""},
		{"resume missing", []string{"train", "--resume", "--out", filepath.Join(dir, "none")}, 1, "--resume", ""},
		{"resume foreign", []string{"train", "--resume", "--out", dir}, 1, "not a cskv run directory", ""},
		{"export partial", []string{"export", "--checkpoint", filepath.Join(dir, "none"), "--out", "p.safetensors"}, 1, "none", "p.safetensors"},
		{"convert exists", []string{"convert", "--model", model, "--out", dir}, 1, "already exists", ""},
		{"window", []string{"eval", "--projections", "x", "--window", "-1"}, 1, "x", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := cskv(t, dir, c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, c.code, stderr)
			}
			if !strings.Contains(stderr, c.want) {
				t.Errorf("stderr %q does not mention %q", stderr, c.want)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Errorf("panic: %s", stderr)
			}
			if c.out != "" {
				if _, err := os.Stat(filepath.Join(dir, c.out)); err == nil {
					t.Errorf("%s was written", c.out)
					os.RemoveAll(filepath.Join(dir, c.out))
				}
			}
		})
	}
}

// help lists the commands and every command's -h lists its flags.
func TestCLIHelp(t *testing.T) {
	code, out, _ := cskv(t, t.TempDir(), "help")
	for _, c := range []string{"eval", "generate", "inspect", "convert", "init", "train", "export"} {
		if code != 0 || !strings.Contains(out, "  "+c+" ") {
			t.Errorf("help does not list %q (exit %d):\n%s", c, code, out)
		}
	}
	code, _, stderr := cskv(t, t.TempDir(), "train", "-h")
	if code != 0 || !strings.Contains(stderr, "-lambda-out") || !strings.Contains(stderr, "(default 600)") {
		t.Errorf("train -h (exit %d): %s", code, stderr)
	}
}

// Every setting the resume check compares is named as cskv train spells
// the flag, so a resume error names a flag that exists.
func TestCLIResumeTableFlags(t *testing.T) {
	code, _, stderr := cskv(t, t.TempDir(), "train", "-h")
	if code != 0 {
		t.Fatalf("train -h: exit %d: %s", code, stderr)
	}
	names := train.ResumeFlags()
	if len(names) == 0 {
		t.Fatal("empty resume table")
	}
	for _, name := range names {
		if !strings.Contains(stderr, "\n  -"+name+" ") && !strings.Contains(stderr, "\n  -"+name+"\n") {
			t.Errorf("resume setting %q is not a flag of cskv train", name)
		}
	}
}

// Projections made for another base model: refused (digest), and with
// --force the shape check says what differs.
func TestCLIForeignProjections(t *testing.T) {
	dir := t.TempDir()
	model := testassets.Path(t, "models/stories260K.gguf")
	evalText := testassets.Path(t, "data/tinystories_eval.txt")
	if code, _, stderr := cskv(t, dir, "init", "--quiet", "--out", "syn.safetensors"); code != 0 {
		t.Fatalf("init on the synthetic model failed: %s", stderr)
	}
	code, _, stderr := cskv(t, dir, "eval", "--model", model, "--data", evalText, "--chunks", "1", "--projections", "syn.safetensors")
	if code != 1 || !strings.Contains(stderr, "were made for base model") || !strings.Contains(stderr, "--force") {
		t.Errorf("digest mismatch: exit %d, %s", code, stderr)
	}
	code, _, stderr = cskv(t, dir, "eval", "--model", model, "--data", evalText, "--chunks", "1", "--projections", "syn.safetensors", "--force")
	if code != 1 || !strings.Contains(stderr, "projections have 4 layers, the model 5") {
		t.Errorf("shape mismatch: exit %d, %s", code, stderr)
	}
}
