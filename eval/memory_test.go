package eval

import (
	"testing"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// A memory sweep's rows are the memory formula of each density × bits, and
// a plan's rows those of its ranks; W = 0 has no table and is refused.
func TestMemorySweep(t *testing.T) {
	mc := model.Shapes["llama3-8b"]
	cache := train.Cache{Window: 32, Mode: kv.WindowBlock, KQuant: train.KeyPerChannel, QuantWindow: 32}
	rows, err := MemorySweep(mc, cache, []float64{0.5, 0.25}, []int{16, 4}, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	for _, r := range rows {
		c := cache
		c.KBits, c.VBits = r.Bits, r.Bits
		s, err := c.Settings(mc, r.KRank, r.VRank)
		if err != nil {
			t.Fatal(err)
		}
		want, err := MemoryTable(mc, Uniform(r.KRank, mc.Layers), Uniform(r.VRank, mc.Layers), s, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if r.MemRow != want[0] || r.KRank != int(r.Density*128)*8 {
			t.Errorf("density %g bits %d: %+v, want %+v", r.Density, r.Bits, r, want[0])
		}
	}
	k, v := Uniform(256, mc.Layers), Uniform(512, mc.Layers)
	plan, err := PlanMemory(mc, k, v, cache, [][2]int{{4, 2}}, 4096)
	if err != nil || len(plan) != 1 || plan[0].Bits != 2 || plan[0].KRanks == nil {
		t.Fatalf("plan rows %+v, %v", plan, err)
	}
	cache.Window = 0
	if _, err := MemorySweep(mc, cache, []float64{0.5}, []int{4}, 4096); err == nil {
		t.Error("--window 0 accepted")
	}
}
