package tests

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
)

// familyFixtures are the family fixtures of ../shared/fixtures/families
// (see its PROVENANCE.md): model path, projections file and goldens key.
var familyFixtures = []struct{ model, proj, golden string }{
	{"llama31", "llama31/proj.safetensors", "llama31"},
	{"llama32", "llama32/proj.safetensors", "llama32"},
	{"llama31.gguf", "llama31/proj.safetensors", "llama31_gguf"},
	{"qwen25_yarn", "qwen25_yarn/proj.safetensors", "qwen25_yarn"},
	{"qwen3", "qwen3/proj.safetensors", "qwen3"},
	{"phi3", "phi3/proj.safetensors", "phi3"},
	{"gemma2", "gemma2/proj.safetensors", "gemma2"},
}

// trainReport is the part of `cskv train --json` checked here.
type trainReport struct {
	Layers []struct {
		CurveKV  []float64 `json:"curve_kv"`
		CurveOut []float64 `json:"curve_out"`
	} `json:"layers"`
	Eval []struct {
		Variant    string  `json:"variant"`
		Perplexity float64 `json:"perplexity"`
	} `json:"eval"`
}

var verifyLine = regexp.MustCompile(`verify: (\d+) positions, max \|logit\(real cache\) − logit\(parallel fake-quant\)\| = (\S+)`)

// Every family fixture, through the command line, with its tokens.ids as the
// data (no tokenizer ships):
//   - `cskv train` with both terms for a few steps completes with finite,
//     positive losses, once per initialisation (svd; asvd with 4-bit QAT of
//     per-channel keys; whiten with the sliding bi-branch rule);
//   - `cskv generate` with the trained 4-bit projections and --verify reports
//     a difference of exactly 0 between the real cache and the parallel
//     evaluation;
//   - `cskv eval` with the fixture's proj.safetensors at --window 0 gives the
//     compressed mean cross-entropy of goldens.json within its tolerance.
func TestFamiliesTrainVerifyEval(t *testing.T) {
	root := testassets.Path(t, "fixtures/families")
	ids := filepath.Join(root, "tokens.ids")
	raw, err := os.ReadFile(filepath.Join(root, "goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		IDs        []int `json:"ids"`
		Tolerances struct {
			CEAbs float64 `json:"ce_abs"`
		} `json:"tolerances"`
		Fixtures map[string]struct {
			Compressed struct {
				CE96 float64 `json:"ce_96"`
			} `json:"compressed"`
		} `json:"fixtures"`
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	var words []string
	for _, id := range g.IDs[:32] {
		words = append(words, strconv.Itoa(id))
	}
	prompt := strings.Join(words, " ") // 32 ids; with 16 generated the verify covers 47 positions
	runs := []struct {
		name string
		args []string
	}{
		{"svd", []string{"--init", "svd"}},
		{"asvd qat", []string{"--init", "asvd", "--k-bits", "4", "--v-bits", "4", "--quant-window", "8", "--window", "8"}},
		{"whiten sliding", []string{"--init", "whiten", "--window-mode", "sliding"}},
	}
	for _, fx := range familyFixtures {
		t.Run(fx.model, func(t *testing.T) {
			dir := t.TempDir()
			modelPath := filepath.Join(root, fx.model)
			var trained string
			for i, r := range runs {
				out := filepath.Join(dir, "run"+strconv.Itoa(i))
				args := append([]string{"train", "--model", modelPath, "--data", ids, "--seq-len", "16",
					"--calib-chunks", "4", "--holdout", "1", "--steps", "3", "--batch", "2",
					"--lambda-kv", "1", "--lambda-out", "1", "--out-seqs", "2", "--out-window", "4", "--out-window-alt", "0", "--k-rank", "8", "--v-rank", "8",
					"--eval-data", ids, "--eval-chunks", "2", "--out", out, "--quiet", "--json"}, r.args...)
				code, stdout, stderr := cskv(t, dir, args...)
				if code != 0 {
					t.Fatalf("train %s: exit %d\n%s", r.name, code, stderr)
				}
				var rep trainReport
				if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
					t.Fatalf("train %s: report: %v\n%s", r.name, err, stdout)
				}
				if len(rep.Layers) != 2 {
					t.Fatalf("train %s: %d layers in the report, want 2", r.name, len(rep.Layers))
				}
				for l, li := range rep.Layers {
					if len(li.CurveKV) != 3 || len(li.CurveOut) != 3 {
						t.Fatalf("train %s layer %d: %d KV and %d output losses, want 3 each", r.name, l, len(li.CurveKV), len(li.CurveOut))
					}
					for s := range li.CurveKV {
						for _, v := range []float64{li.CurveKV[s], li.CurveOut[s]} {
							if !(v > 0) || math.IsInf(v, 0) {
								t.Errorf("train %s layer %d step %d: loss %g, want finite and positive", r.name, l, s+1, v)
							}
						}
					}
				}
				for _, e := range rep.Eval {
					if !(e.Perplexity > 1) || math.IsInf(e.Perplexity, 0) {
						t.Errorf("train %s: %s perplexity %g", r.name, e.Variant, e.Perplexity)
					}
				}
				t.Logf("train %s: final KV loss %.4g/%.4g, output loss %.4g/%.4g (layers 0/1)", r.name,
					rep.Layers[0].CurveKV[2], rep.Layers[1].CurveKV[2], rep.Layers[0].CurveOut[2], rep.Layers[1].CurveOut[2])
				if i == 1 {
					trained = filepath.Join(out, "projections.safetensors")
				}
			}
			code, _, stderr := cskv(t, dir, "generate", "--model", modelPath, "--projections", trained,
				"--prompt-ids", prompt, "-n", "16", "--k-bits", "4", "--v-bits", "4", "--window", "8", "--quant-window", "8", "--verify")
			if code != 0 {
				t.Fatalf("generate --verify: exit %d\n%s", code, stderr)
			}
			m := verifyLine.FindStringSubmatch(stderr)
			if m == nil {
				t.Fatalf("generate --verify printed no verify line:\n%s", stderr)
			}
			if m[1] != "47" || m[2] != "0" {
				t.Errorf("generate --verify: %s positions, difference %s; want 47 positions, difference 0", m[1], m[2])
			}
			code, stdout, stderr := cskv(t, dir, "eval", "--model", modelPath, "--data", ids, "--seq-len", "96",
				"--projections", filepath.Join(root, fx.proj), "--window", "0", "--json", "--force")
			if code != 0 {
				t.Fatalf("eval: exit %d\n%s", code, stderr)
			}
			var ev struct {
				Compressed struct {
					MeanLoss float64 `json:"mean_loss"`
				} `json:"compressed"`
			}
			if err := json.Unmarshal([]byte(stdout), &ev); err != nil {
				t.Fatalf("eval report: %v\n%s", err, stdout)
			}
			want := g.Fixtures[fx.golden].Compressed.CE96
			if d := math.Abs(ev.Compressed.MeanLoss - want); !(d <= g.Tolerances.CEAbs) {
				t.Errorf("eval --window 0: compressed mean loss %.8f, golden %.8f (|Δ| %.2g > %g)", ev.Compressed.MeanLoss, want, d, g.Tolerances.CEAbs)
			}
			t.Logf("generate --verify difference %s over %s positions; eval --window 0 mean loss %.8f vs golden %.8f", m[2], m[1], ev.Compressed.MeanLoss, want)
		})
	}
}
