package eval

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
)

// compressedGoldens is the part of ../shared/fixtures/families/goldens.json
// (an independent float64 reference; see its PROVENANCE.md) that the
// compressed protocol uses: every token's K and V rebuilt from the
// fixture's proj.safetensors, no original window.
type compressedGoldens struct {
	IDs        []int `json:"ids"`
	Tolerances struct {
		LogitsAbs float64 `json:"logits_abs"`
		CEAbs     float64 `json:"ce_abs"`
	} `json:"tolerances"`
	Fixtures map[string]struct {
		Path           string `json:"path"`
		LogitPositions []int  `json:"logit_positions"`
		Compressed     struct {
			Projections string      `json:"projections"`
			Logits      [][]float64 `json:"logits"`
			Greedy      []int       `json:"greedy"`
			NearTies    []int       `json:"greedy_near_ties"`
			CE96        float64     `json:"ce_96"`
		} `json:"compressed"`
	} `json:"fixtures"`
}

// The compressed evaluation cskv runs (kvcache.NewCompressors as the
// overrides of the parallel forward, eval.Compressed for the mean loss) with
// each family fixture's proj.safetensors at window 0 and no quantisation
// reproduces the float64 reference: logits at the listed positions within
// the stated absolute tolerance (2e-4), greedy ids equal outside the listed
// near-ties, mean cross-entropy over the 96 ids within 1e-5.
func TestFamilyCompressedGoldens(t *testing.T) {
	p := testassets.Path(t, "fixtures/families/goldens.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var g compressedGoldens
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p)
	for _, name := range []string{"llama32", "llama31", "llama31_gguf", "qwen25_yarn", "qwen3", "phi3", "gemma2"} {
		fx, ok := g.Fixtures[name]
		if !ok {
			t.Fatalf("goldens have no fixture %s", name)
		}
		t.Run(name, func(t *testing.T) {
			m, err := model.Open(filepath.Join(dir, fx.Path))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			proj, err := checkpoints.ReadProjections(filepath.Join(dir, fx.Compressed.Projections))
			if err != nil {
				t.Fatal(err)
			}
			k, v, err := kv.Quant{KBits: 16, VBits: 16}.Specs(proj.Layers[0].KRank, proj.Layers[0].VRank, m.Config.KVHeads)
			if err != nil {
				t.Fatal(err)
			}
			s := kvcache.Settings{Window: 0, K: k, V: v}
			cs, err := kvcache.NewCompressors(m, proj, s)
			if err != nil {
				t.Fatal(err)
			}
			want := fx.Compressed
			V := m.Config.Vocab
			logits, err := m.Forward([][]int{g.IDs[:48]}, kvcache.Overrides(cs))
			if err != nil {
				t.Fatal(err)
			}
			if len(want.Logits) != len(fx.LogitPositions) || len(want.Logits) == 0 {
				t.Fatalf("%d golden rows for %d positions", len(want.Logits), len(fx.LogitPositions))
			}
			var maxDiff float64
			for r, pos := range fx.LogitPositions {
				for i, w := range want.Logits[r] {
					maxDiff = math.Max(maxDiff, math.Abs(float64(logits[pos*V+i])-w))
				}
			}
			if maxDiff > g.Tolerances.LogitsAbs {
				t.Errorf("compressed logits max |Δ| %.3g > %g", maxDiff, g.Tolerances.LogitsAbs)
			}
			for pos, w := range want.Greedy {
				if got := model.Argmax(logits[pos*V : (pos+1)*V]); got != w && !slices.Contains(want.NearTies, pos) {
					t.Errorf("greedy id at %d: %d, golden %d", pos, got, w)
				}
			}
			res, errs, err := Compressed(context.Background(), m, [][]int{g.IDs}, proj, s, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d := math.Abs(res.MeanLoss - want.CE96); d > g.Tolerances.CEAbs {
				t.Errorf("compressed ce_96 %.8f, golden %.8f (|Δ| %.2g > %g)", res.MeanLoss, want.CE96, d, g.Tolerances.CEAbs)
			}
			for _, e := range errs {
				if !(e.K > 0 && e.K < 1 && e.V > 0 && e.V < 1) {
					t.Errorf("layer %d: relative errors k %g, v %g, want in (0, 1) for rank-8 factors", e.Layer, e.K, e.V)
				}
			}
			t.Logf("%s compressed: logits max |Δ| %.2g (tol %g), ce_96 %.8f vs golden %.8f (|Δ| %.2g, tol %g)",
				name, maxDiff, g.Tolerances.LogitsAbs, res.MeanLoss, want.CE96, math.Abs(res.MeanLoss-want.CE96), g.Tolerances.CEAbs)
		})
	}
}
