package train

import (
	"context"
	"math"
	"testing"
)

// Allocation on the embedded synthetic model: the plan fits the budget (0.25
// of the fp16 cache exactly in bytes), each KV curve falls with rank to 0 at
// full rank, every curve has its output-term points, and the chosen bytes add
// up to the plan's.
func TestAllocateSynthetic(t *testing.T) {
	cfg := Defaults()
	cfg.SeqLen, cfg.CalibChunks, cfg.Holdout, cfg.Export = 32, 8, 2, "unused"
	cfg.Init = WhitenInit
	for _, obj := range []string{ObjectiveKV, ObjectiveOut} {
		as := DefaultAllocSettings(0.25)
		as.Objective = obj
		p, err := Allocate(context.Background(), cfg, as, Env{})
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

func TestAllocateErrors(t *testing.T) {
	cfg := Defaults()
	cfg.SeqLen, cfg.CalibChunks, cfg.Holdout, cfg.Export = 32, 4, 0, "unused"
	if _, err := Allocate(context.Background(), cfg, DefaultAllocSettings(0.25), Env{}); err == nil {
		t.Error("output objective without held-out chunks accepted")
	}
	cfg.Holdout = 1
	for _, as := range []AllocSettings{{Budget: 0, Objective: ObjectiveKV}, {Budget: 1.5, Objective: ObjectiveKV},
		{Budget: 0.25, Objective: "ppl"}, {Budget: 1e-4, Objective: ObjectiveKV}, {Budget: math.NaN(), Objective: ObjectiveKV}} {
		if _, err := Allocate(context.Background(), cfg, as, Env{}); err == nil {
			t.Errorf("%+v accepted", as)
		}
	}
}
