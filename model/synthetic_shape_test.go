package model

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
)

func TestSyntheticShape(t *testing.T) {
	cfg := Config{Hidden: 48, Layers: 3, Heads: 6, KVHeads: 2, HeadDim: 8, FFN: 80, Vocab: 100,
		RopeBase: 10000, RMSEps: 1e-6, QKVBias: true, TiedOutput: true}
	m, err := SyntheticShape(cfg, 9)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.Arch != "llama" || m.Format != "synthetic-shape" || m.Synthetic() || !strings.Contains(m.Path, "synthetic-shape") {
		t.Errorf("config %+v format %q path %q", m.Config, m.Format, m.Path)
	}
	if len(m.Embed) != 100*48 || len(m.Output) != 100*48 || !m.Config.TiedOutput {
		t.Errorf("embed %d output %d tied %v", len(m.Embed), len(m.Output), m.Config.TiedOutput)
	}
	blk, err := m.Block(2)
	if err != nil {
		t.Fatal(err)
	}
	if len(blk.Wq) != 48*48 || len(blk.Wk) != 16*48 || len(blk.Wv) != 16*48 || len(blk.Wo) != 48*48 ||
		len(blk.Wgate) != 80*48 || len(blk.Wdown) != 48*80 || len(blk.Bk) != 16 {
		t.Fatal("block tensors have the wrong sizes")
	}
	// Standard deviation of Wgate ≈ 1/sqrt(48): 3840 draws, so within 5%.
	var ss float64
	for _, v := range blk.Wgate {
		ss += float64(v) * float64(v)
	}
	if sd, want := math.Sqrt(ss/float64(len(blk.Wgate))), 1/math.Sqrt(48); math.Abs(sd/want-1) > 0.05 {
		t.Errorf("Wgate std %.4f, want ≈ %.4f", sd, want)
	}
	for _, v := range blk.AttnNorm {
		if v != 1 {
			t.Fatal("attention norm not all ones")
		}
	}
	// Deterministic in the seed, and the layers differ from each other.
	m2, _ := SyntheticShape(cfg, 9)
	m3, _ := SyntheticShape(cfg, 10)
	b2, _ := m2.Block(2)
	b3, _ := m3.Block(2)
	b1, _ := m.Block(1)
	if blk.Wk[7] != b2.Wk[7] || blk.Wk[7] == b3.Wk[7] || blk.Wk[7] == b1.Wk[7] {
		t.Error("weights not a deterministic function of seed and tensor")
	}
	// It runs.
	logits, err := m.Forward([][]int{{1, 2, 3, 99}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range logits {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("non-finite logits")
		}
	}
	// Untied output gets its own matrix.
	cfg.TiedOutput, cfg.QKVBias = false, false
	mu, err := SyntheticShape(cfg, 9)
	if err != nil {
		t.Fatal(err)
	}
	if &mu.Output[0] == &mu.Embed[0] {
		t.Error("untied config got a tied output")
	}
	cfg.HeadDim = 7
	if _, err := SyntheticShape(cfg, 9); err == nil || !strings.Contains(err.Error(), "odd") {
		t.Errorf("odd head dim: err = %v", err)
	}
}

func TestSyntheticShapeIndependentOfProcs(t *testing.T) {
	// Wgate (1024, 512) spans two random streams; the values must not depend
	// on how many goroutines drew them, and every read gives the same values.
	cfg := Config{Hidden: 512, Layers: 1, Heads: 8, KVHeads: 8, HeadDim: 64, FFN: 1024, Vocab: 10,
		RopeBase: 10000, RMSEps: 1e-6, TiedOutput: true}
	m, err := SyntheticShape(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf(hfNames[Wgate], 0)
	prev := runtime.GOMAXPROCS(1)
	one, _, err := m.src.read(name)
	runtime.GOMAXPROCS(4)
	four, _, err2 := m.src.read(name)
	runtime.GOMAXPROCS(prev)
	if err != nil || err2 != nil {
		t.Fatal(err, err2)
	}
	if len(one) != 1024*512 || len(one) <= shapeChunk {
		t.Fatalf("tensor has %d values; the test needs more than one chunk", len(one))
	}
	for i := range one {
		if one[i] != four[i] {
			t.Fatalf("value %d differs between 1 and 4 goroutines: %v vs %v", i, one[i], four[i])
		}
	}
	if one[0] == one[shapeChunk] && one[1] == one[shapeChunk+1] {
		t.Error("chunks repeat the same random stream")
	}
}

// OpenShape refuses an unknown shape or layer count, naming it; the table
// holds the published sizes.
func TestOpenShapeErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"shape:llama9-1b":      `unknown shape "llama9-1b"`,
		"shape:llama2-7b:0":    `layers "0": want 1 … 32`,
		"shape:llama2-7b:33":   `layers "33"`,
		"shape:llama2-7b:two":  `layers "two"`,
		"model/llama2-7b.gguf": "not a shape:NAME[:LAYERS] shape",
	} {
		if _, err := OpenShape(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want one containing %q", spec, err, want)
		}
	}
	if c := Shapes["llama2-7b"]; c.Hidden != 4096 || c.FFN != 11008 || c.KVDim() != 4096 || c.Validate() != nil {
		t.Errorf("llama2-7b: %+v", c)
	}
	if c := Shapes["llama3-8b"]; c.KVDim() != 1024 || c.FFN != 14336 || c.Validate() != nil {
		t.Errorf("llama3-8b: %+v", c)
	}
	if c := Shapes["llama3-70b"]; c.Hidden != 8192 || c.Layers != 80 || c.QDim() != 8192 || c.KVDim() != 1024 || c.FFN != 28672 || c.Validate() != nil {
		t.Errorf("llama3-70b: %+v", c)
	}
	if _, err := OpenShape("shape:llama9-1b"); err == nil || !strings.Contains(err.Error(), "llama2-7b, llama3-70b, llama3-8b") {
		t.Errorf("an unknown shape's error should list the known ones: %v", err)
	}
}
