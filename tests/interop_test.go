package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model/safetensors"
)

// stripMetadata writes the tensors of a projections file without any
// metadata, as a tool that knows only the tensor layout would.
func stripMetadata(t *testing.T, src, dst string) {
	t.Helper()
	p, err := checkpoints.ReadProjections(src)
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for i, l := range p.Layers {
		shapes := l.Shapes(p.Hidden, p.KVDim)
		for k, data := range l.Tensors() {
			ts = append(ts, safetensors.Tensor{Name: "model.layers." + strconv.Itoa(i) + ".self_attn." + kv.ExportNames[k] + ".weight",
				Shape: []int{shapes[k][0], shapes[k][1]}, DType: safetensors.F32, Data: data})
		}
	}
	if err := safetensors.Write(dst, ts, nil); err != nil {
		t.Fatal(err)
	}
}

// evalNumbers runs eval --json and returns what it printed, less the
// fields that name the file or time the run.
func evalNumbers(t *testing.T, dir string, args ...string) map[string]any {
	t.Helper()
	code, stdout, stderr := cskv(t, dir, append([]string{"eval", "--quiet", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("eval %v (exit %d): %s", args, code, stderr)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("eval output %q: %v", stdout, err)
	}
	delete(out, "projections")
	if c, ok := out["compressed"].(map[string]any); ok {
		delete(c, "seconds")
		delete(c, "tokens_per_s")
	}
	return out
}

func sameJSON(t *testing.T, what string, a, b map[string]any) {
	t.Helper()
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatalf("%s: numbers differ:\n%s\n%s", what, ja, jb)
	}
}

// TestCLIReferenceRoundTrip: init on stories260K → export --format cskv-ref
// → import gives bit-identical factors; eval of the .ckpt pair and of a
// metadata-stripped copy with --rope-layout hf give the same numbers as the
// original file; ranks the reference code cannot express are refused.
func TestCLIReferenceRoundTrip(t *testing.T) {
	dir := t.TempDir()
	model := testassets.Path(t, "models/stories260K.gguf")
	calib := testassets.Path(t, "data/tinystories_calib.txt")
	evalText := testassets.Path(t, "data/tinystories_eval.txt")
	initArgs := []string{"init", "--quiet", "--model", model, "--data", calib, "--calib-chunks", "4", "--seq-len", "64", "--k-density", "0.25", "--init", "asvd"}
	if code, _, stderr := cskv(t, dir, append(initArgs, "--out", "p.safetensors")...); code != 0 {
		t.Fatalf("init (exit %d): %s", code, stderr)
	}
	code, stdout, stderr := cskv(t, dir, "export", "--format", "cskv-ref", "--projections", "p.safetensors", "--model", model, "--out", "ref")
	if code != 0 {
		t.Fatalf("export (exit %d): %s", code, stderr)
	}
	kFile := filepath.Join("ref", "density_k_0.25_v_0.5_quant_k_16_v_16_asvd__k.ckpt")
	if !strings.Contains(stdout, kFile) || !strings.Contains(stdout, "_asvd__v.ckpt") {
		t.Fatalf("export printed %q, want the pair named like %s", stdout, kFile)
	}
	if code, _, stderr := cskv(t, dir, "import", "--quiet", "--model", model, "--from", kFile, "--out", "back.safetensors"); code != 0 {
		t.Fatalf("import (exit %d): %s", code, stderr)
	}
	orig, err := checkpoints.ReadProjections(filepath.Join(dir, "p.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	back, err := checkpoints.ReadProjections(filepath.Join(dir, "back.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range orig.Layers {
		o, b := orig.Layers[i].Tensors(), back.Layers[i].Tensors()
		for k := range o {
			if len(o[k]) != len(b[k]) {
				t.Fatalf("layer %d %s: %d values after the round trip, want %d", i, kv.ExportNames[k], len(b[k]), len(o[k]))
			}
			for j := range o[k] {
				if o[k][j] != b[k][j] {
					t.Fatalf("layer %d %s[%d]: %v after the round trip, want %v", i, kv.ExportNames[k], j, b[k][j], o[k][j])
				}
			}
		}
	}
	for k, v := range map[string]string{"source_format": "cskv-ref", "rope_layout": "hf-rotate-half", "k_rank": "8", "v_rank": "16", "base_model": "stories260K.gguf"} {
		if back.Meta[k] != v {
			t.Errorf("imported metadata %s = %q, want %q", k, back.Meta[k], v)
		}
	}

	evalArgs := []string{"--model", model, "--data", evalText, "--chunks", "4", "--seq-len", "64"}
	want := evalNumbers(t, dir, append(evalArgs, "--projections", "p.safetensors")...)
	sameJSON(t, "eval of the .ckpt pair", want, evalNumbers(t, dir, append(evalArgs, "--projections", kFile)...))
	stripMetadata(t, filepath.Join(dir, "p.safetensors"), filepath.Join(dir, "plain.safetensors"))
	sameJSON(t, "eval of the stripped file with --rope-layout hf", want, evalNumbers(t, dir, append(evalArgs, "--projections", "plain.safetensors", "--rope-layout", "hf")...))
	code, _, stderr = cskv(t, dir, append([]string{"eval"}, append(evalArgs, "--projections", "plain.safetensors")...)...)
	if code != 1 || !strings.Contains(stderr, "not a cskv projections file") {
		t.Errorf("stripped file without --rope-layout: exit %d, %s", code, stderr)
	}

	// Explicit ranks: no official density gives them.
	if code, _, stderr := cskv(t, dir, append(initArgs, "--k-rank", "12", "--out", "explicit.safetensors")...); code != 0 {
		t.Fatalf("init --k-rank (exit %d): %s", code, stderr)
	}
	code, _, stderr = cskv(t, dir, "export", "--format", "cskv-ref", "--projections", "explicit.safetensors", "--model", model, "--out", "ref2")
	if code != 1 || !strings.Contains(stderr, "not expressible as the reference code's densities") {
		t.Errorf("explicit ranks: exit %d, %s", code, stderr)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "ref2")); len(entries) != 0 {
		t.Errorf("refused export left files: %v", entries)
	}
	// Without --model the head shape is unknown: the ranks cannot be checked.
	code, _, stderr = cskv(t, dir, "export", "--format", "cskv-ref", "--projections", "p.safetensors", "--out", "ref3")
	if code != 1 || !strings.Contains(stderr, "give --model") {
		t.Errorf("export without --model: exit %d, %s", code, stderr)
	}
	// Factors of another model's shapes are refused by import.
	code, _, stderr = cskv(t, dir, "import", "--from", kFile, "--out", "syn.safetensors")
	if code != 1 || !strings.Contains(stderr, "layers of factors, the model") {
		t.Errorf("import onto the synthetic model: exit %d, %s", code, stderr)
	}
}

// TestCLIFamilyFixtureWithoutMetadata: a projections file written by the
// independent implementation (fixtures/families/*/proj.safetensors),
// stripped of its metadata, evaluates with --rope-layout hf to the same
// numbers as with it, for every family fixture.
func TestCLIFamilyFixtureWithoutMetadata(t *testing.T) {
	root := testassets.Path(t, "fixtures/families")
	for _, fam := range []string{"llama32", "llama31", "qwen25_yarn", "qwen3", "phi3", "gemma2"} {
		dir := t.TempDir()
		modelDir := filepath.Join(root, fam)
		tokens := filepath.Join(root, "tokens.ids")
		args := []string{"--model", modelDir, "--data", tokens, "--chunks", "2", "--seq-len", "32"}
		stripMetadata(t, filepath.Join(modelDir, "proj.safetensors"), filepath.Join(dir, "plain.safetensors"))
		want := evalNumbers(t, dir, append(args, "--projections", filepath.Join(modelDir, "proj.safetensors"))...)
		sameJSON(t, fam, want, evalNumbers(t, dir, append(args, "--projections", "plain.safetensors", "--rope-layout", "hf")...))
	}
}
