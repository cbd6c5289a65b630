package train

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cskv/cskv/attn"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

// memoryConfig is the README's measurement: Llama-2-7B shapes, sequences of
// 4096 tokens, batches of 2 with the output term on one.
func memoryConfig(n int) Config {
	c := Defaults()
	c.SeqLen, c.CalibChunks, c.Holdout, c.Batch, c.OutSeqs, c.Steps = 4096, n, 1, 2, 1, 2
	return c
}

// The formula's terms follow their definitions: in memory the streams are
// (N+H)·T·D·4 and grow with N; spilled they vanish and the total no longer
// depends on N; at the paper's 256 × 4096 tokens a spilled run fits 24 GiB
// with batches of 8 sequences and the output term on all of them, with the
// default --out-window-alt (one graph, two attention stores) or without.
func TestEstimateMemory(t *testing.T) {
	mc := model.Shapes["llama2-7b"]
	c := memoryConfig(16)
	c.StreamMemory = 1 << 40
	m := EstimateMemory(c, mc, 2048, 2048)
	if m.Spilled || m.Streams != 17*4096*4096*4 || m.Model != 2*32000*4096*4 || m.Gram != 4096*4096*8 {
		t.Errorf("in memory: %+v", m)
	}
	if m.Targets != 0 { // 16·4096·4096·8 = 2 GiB > targetBudget
		t.Errorf("targets %d, want 0 above the budget", m.Targets)
	}
	if want := m.Runtime + int64(m.GC*float64(m.Model+m.Blocks+m.Streams+max(m.Layer, m.Advance))); m.Total != want {
		t.Errorf("total %d, want %d", m.Total, want)
	}
	c.StreamMemory = 1
	s := EstimateMemory(c, mc, 2048, 2048)
	if !s.Spilled || s.Streams != 0 || s.Advance <= m.Advance || s.Total >= m.Total {
		t.Errorf("spilled: %+v (in memory %+v)", s, m)
	}
	big := memoryConfig(256)
	big.StreamMemory = 1
	p := EstimateMemory(big, mc, 2048, 2048)
	if p.Total != s.Total {
		t.Errorf("spilled total depends on N: %d at 256, %d at 16", p.Total, s.Total)
	}
	if p.Total > 24<<30 || big.OutWindowAlt == 0 {
		t.Errorf("256 × 4096, batch 2, the default --out-window-alt: %d GiB, want ≤ 24", p.Total>>30)
	}
	// --out-window-alt trains both windows with one graph: its attention
	// keeps a second probability store, none at 4096 tokens (recomputed)
	// and the alternate window's at 2048, a second kernel's statistics, and
	// its shared tiles grow to the wider window's
	one := big
	one.OutWindowAlt = 0
	rule := attn.Rule{Heads: 32, KVHeads: 32, HeadDim: 128}
	alt := func(T int, bf16 bool) int64 { // what the alternate window's kernel adds to the graph
		tiles, stats := attn.WorkspaceBytes(1, T, rule, big.OutWindowAlt, big.Window, bf16, true)
		tiles0, _ := attn.WorkspaceBytes(1, T, rule, big.OutWindow, big.Window, bf16, true)
		return attn.StoreBytes(1, T, rule, big.OutWindowAlt, big.Window, bf16) + stats + tiles - tiles0
	}
	if q := EstimateMemory(one, mc, 2048, 2048); p.Graph-q.Graph != alt(4096, false) || attn.StoreBytes(1, 4096, rule, big.OutWindowAlt, big.Window, false) != 0 {
		t.Errorf("4096 tokens: the alternate window adds %d bytes, want %d (no store)", p.Graph-q.Graph, alt(4096, false))
	}
	short, shortOne := big, one
	short.SeqLen, shortOne.SeqLen = 2048, 2048
	store := attn.StoreBytes(1, 2048, rule, short.OutWindowAlt, short.Window, false)
	if d := EstimateMemory(short, mc, 2048, 2048).Graph - EstimateMemory(shortOne, mc, 2048, 2048).Graph; d != alt(2048, false) || store == 0 {
		t.Errorf("2048 tokens: the alternate window adds %d bytes, want %d (its store's %d among them)", d, alt(2048, false), store)
	}
	// the reference recipe's batch of 8 fits with the default --out-window-alt
	full := big
	full.Batch, full.OutSeqs, full.Holdout = 8, 8, 8
	if p := EstimateMemory(full, mc, 2048, 2048); p.Total > 24<<30 {
		t.Errorf("256 × 4096, batch 8, the default --out-window-alt: %d GiB, want ≤ 24", p.Total>>30)
	}
	big.Batch, big.OutSeqs, big.Holdout, big.OutWindowAlt = 8, 8, 8, 0
	if p = EstimateMemory(big, mc, 2048, 2048); p.Total > 24<<30 {
		t.Errorf("256 × 4096, batch 8, one graph: %d GiB, want ≤ 24", p.Total>>30)
	}
	big.Precision = linalg.BF16                                            // attention's bf16 keys and values and tiles on top
	rounded := int64(4*2*8*4096*4096 + 2*4096*4096 + 2*4096*(4096+2*4096)) // keys and values; G; Wq, Wk, Wv
	tiles16, _ := attn.WorkspaceBytes(8, 4096, rule, big.OutWindow, big.Window, true, true)
	tiles32, _ := attn.WorkspaceBytes(8, 4096, rule, big.OutWindow, big.Window, false, true)
	rounded += tiles16 - tiles32
	if bp := EstimateMemory(big, mc, 2048, 2048); bp.Total > 24<<30 || bp.Graph != p.Graph+rounded || tiles16 <= tiles32 {
		t.Errorf("256 × 4096, batch 8, bf16: %d GiB (graph %d, f32 %d), want ≤ 24 and %d bytes more graph", bp.Total>>30, bp.Graph, p.Graph, rounded)
	}
	// train.Run warns when the formula exceeds the machine: batches of 16
	// with the output term on all of them do not fit 24 GiB
	over := big
	over.Batch, over.OutSeqs = 16, 16
	if o := EstimateMemory(over, mc, 2048, 2048); !o.exceeds(24<<30) || p.exceeds(24<<30) || o.exceeds(0) {
		t.Errorf("batch 16 (%d MiB) should exceed 24 GiB, batch 8 (%d MiB) not, and an unknown machine never", o.Total>>20, p.Total>>20)
	}
	big.Precision = linalg.F32
	big.StreamMemory = 1 << 40
	if p = EstimateMemory(big, mc, 2048, 2048); !(p.Total > 32<<30) {
		t.Errorf("256 × 4096 in memory: %d GiB, want the streams' 16.5 GiB ×%.2f on top", p.Total>>30, p.GC)
	}
}

// procKB reads a "key: N kB" line in bytes and gives 0 for a missing file,
// key or number; PeakRSS and memTotal are positive on Linux.
func TestProcKB(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status")
	os.WriteFile(path, []byte("Name:\tcskv\nVmHWM:\t  123456 kB\nVmRSS: bad kB\n"), 0o644)
	for key, want := range map[string]int64{"VmHWM:": 123456 << 10, "VmRSS:": 0, "VmPeak:": 0} {
		if got := procKB(path, key); got != want {
			t.Errorf("%s: %d, want %d", key, got, want)
		}
	}
	if procKB(filepath.Join(t.TempDir(), "none"), "VmHWM:") != 0 {
		t.Error("missing file: want 0")
	}
	if _, err := os.Stat("/proc/self/status"); err == nil && (PeakRSS() <= 0 || memTotal() <= 0) {
		t.Errorf("PeakRSS %d, memTotal %d: want both positive", PeakRSS(), memTotal())
	}
}
