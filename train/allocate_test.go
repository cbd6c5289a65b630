package train

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cskv/cskv/alloc"
	"github.com/cskv/cskv/checkpoints"
)

// Allocation on the embedded synthetic model: the plan fits the budget (0.25
// of the fp16 cache exactly in bytes), each KV curve falls with rank to 0 at
// full rank, every curve has its output-term points, and the chosen bytes add
// up to the plan's.
func TestAllocateSynthetic(t *testing.T) {
	cfg := Defaults()
	cfg.SeqLen, cfg.CalibChunks, cfg.Holdout, cfg.Export = 32, 8, 2, "unused"
	cfg.Init = WhitenInit
	for _, obj := range []Objective{ObjectiveKV, ObjectiveOut, ObjectiveOutMixed} {
		cfg.Budget, cfg.Objective = 0.25, obj
		p, err := Allocate(context.Background(), cfg, Env{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := OpenModel("")
		if err != nil {
			t.Fatal(err)
		}
		mc := m.Config
		if err := p.Check(mc.Layers, mc.KVDim()); err != nil {
			t.Fatal(err)
		}
		if p.PlanBytes > p.BudgetBytes || p.BudgetBytes != p.FP16Bytes/4 {
			t.Errorf("%s: plan %d bytes, budget %d, fp16 %d", obj, p.PlanBytes, p.BudgetBytes, p.FP16Bytes)
		}
		var sum int64
		for _, c := range p.Curves {
			if n := len(c.Ranks); c.Ranks[n-1] != mc.KVDim() || c.KV[n-1] != 0 || len(c.Out) != n {
				t.Fatalf("%s layer %d %s: curve ends at rank %d with error %g (%d out points)", obj, c.Layer, c.Side, c.Ranks[n-1], c.KV[n-1], len(c.Out))
			}
			for j := 1; j < len(c.KV); j++ {
				if c.KV[j] > c.KV[j-1]+1e-12 {
					t.Errorf("%s layer %d %s: kv curve rises at rank %d", obj, c.Layer, c.Side, c.Ranks[j])
				}
			}
			for j, r := range c.Ranks {
				if r == c.Rank {
					sum += c.Bytes[j]
				}
			}
		}
		if sum != p.PlanBytes {
			t.Errorf("%s: chosen bytes %d, plan says %d", obj, sum, p.PlanBytes)
		}
		m.Close()
	}
}

// With 4-bit features (per-channel keys: every rank; per-token values:
// multiples of the kv head count) the plan keeps the values on their grid and
// fits the budget, scales and zeros included.
func TestAllocateQuantised(t *testing.T) {
	cfg := Defaults()
	cfg.SeqLen, cfg.CalibChunks, cfg.Holdout, cfg.Export = 32, 8, 2, "unused"
	cfg.KBits, cfg.VBits, cfg.Budget = 4, 4, 0.2
	p, err := Allocate(context.Background(), cfg, Env{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel("")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if p.PlanBytes > p.BudgetBytes || p.UnitTokens != 32 {
		t.Errorf("plan %d bytes for a budget of %d over %d tokens", p.PlanBytes, p.BudgetBytes, p.UnitTokens)
	}
	for _, r := range p.Ranks {
		if r.VRank%m.Config.KVHeads != 0 {
			t.Errorf("layer %d: value rank %d off the per-token group grid", r.Layer, r.VRank)
		}
	}
	if k := p.Curves[0].Ranks; k[0] != 1 {
		t.Errorf("per-channel key grid starts at %d, want 1", k[0])
	}
}

func TestAllocateErrors(t *testing.T) {
	cfg := Defaults()
	cfg.SeqLen, cfg.CalibChunks, cfg.Holdout, cfg.Export = 32, 4, 0, "unused"
	cfg.Budget = 0.25
	// fewer calibration sequences (4) than the default --batch (8): the
	// allocation trains nothing, so the batch is not its concern
	if cfg.Batch <= cfg.CalibChunks {
		t.Fatalf("the test wants the default batch %d above the %d sequences", cfg.Batch, cfg.CalibChunks)
	}
	if _, err := Allocate(context.Background(), cfg, Env{}); err == nil || !strings.Contains(err.Error(), "held-out") {
		t.Errorf("output objective without held-out chunks: %v, want an error naming them", err)
	}
	cfg.Holdout = 1
	kv := cfg
	kv.Objective = ObjectiveKV
	if _, err := Allocate(context.Background(), kv, Env{}); err != nil {
		t.Errorf("4 calibration sequences, default --batch 8: %v", err)
	}
	for _, c := range []struct {
		budget    float64
		objective Objective
		want      string
	}{{0, ObjectiveKV, "budget"}, {1.5, ObjectiveKV, "budget"}, {0.25, Objective(9), "objective"}, {1e-4, ObjectiveKV, "budget"}, {math.NaN(), ObjectiveKV, "budget"}} {
		cfg.Budget, cfg.Objective = c.budget, c.objective
		if _, err := Allocate(context.Background(), cfg, Env{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("budget %v objective %v: %v, want an error naming the %s", c.budget, c.objective, err, c.want)
		}
	}
}

// A run with a plan trains every layer at its own ranks, exports them (with
// the lists in the metadata), and ExportCheckpoint gives the same file; a
// resume with other ranks is refused.
func TestRunWithPlan(t *testing.T) {
	dir := t.TempDir()
	m, err := OpenModel("")
	if err != nil {
		t.Fatal(err)
	}
	mc := m.Config
	m.Close()
	plan := &alloc.Plan{Version: alloc.PlanVersion, Layers: mc.Layers, KVDim: mc.KVDim()}
	for l := 0; l < mc.Layers; l++ {
		plan.Ranks = append(plan.Ranks, alloc.LayerRanks{Layer: l, KRank: 1 + l, VRank: mc.KVDim() - 2*l})
	}
	planPath := filepath.Join(dir, "plan.json")
	if err := plan.Write(planPath); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.SeqLen, cfg.CalibChunks, cfg.Holdout, cfg.Steps, cfg.Batch, cfg.OutSeqs = 32, 4, 1, 2, 2, 2
	cfg.Plan, cfg.Out, cfg.SaveEvery = planPath, filepath.Join(dir, "run"), 1
	res, err := Run(context.Background(), cfg, Env{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := checkpoints.ReadProjections(res.Projections)
	if err != nil {
		t.Fatal(err)
	}
	k, v := p.Ranks()
	if !slices.Equal(k, plan.KRanks()) || !slices.Equal(v, plan.VRanks()) {
		t.Errorf("exported ranks k %v v %v, plan k %v v %v", k, v, plan.KRanks(), plan.VRanks())
	}
	if p.Meta["k_rank"] != "1,2,3,4" || p.Meta["plan"] != "plan.json" {
		t.Errorf("metadata k_rank %q plan %q", p.Meta["k_rank"], p.Meta["plan"])
	}
	again := filepath.Join(dir, "again.safetensors")
	if err := ExportCheckpoint(cfg.Out, again, DTypeF32); err != nil {
		t.Fatal(err)
	}
	q, err := checkpoints.ReadProjections(again)
	if err != nil {
		t.Fatal(err)
	}
	for l := range p.Layers {
		if !slices.Equal(p.Layers[l].Ak, q.Layers[l].Ak) || !slices.Equal(p.Layers[l].Bv, q.Layers[l].Bv) {
			t.Errorf("layer %d: ExportCheckpoint differs from the run's export", l)
		}
	}
	plan.Ranks[0].KRank = 2
	if err := plan.Write(planPath); err != nil {
		t.Fatal(err)
	}
	cfg.Resume = true
	if _, err := Run(context.Background(), cfg, Env{}); !errors.Is(err, ErrMismatch) {
		t.Errorf("resume with other ranks: %v, want ErrMismatch", err)
	}
	cfg.Resume, cfg.Budget = false, 0.25
	if err := cfg.Validate(); err == nil {
		t.Error("--plan with --budget accepted")
	}
}
