package train

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/model/safetensors"
)

// storiesFactors: factors shaped for stories260K (5 layers, hidden 64,
// 4 kv heads × head_dim 8) at densities 0.25 / 0.5 (ranks 8 / 16), random
// values using every mantissa bit, with the metadata an export records.
func storiesFactors(t *testing.T) (*model.Model, *checkpoints.Projections) {
	t.Helper()
	m, err := model.Open(testassets.Path(t, "models/stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	mc := m.Config
	cfg := Reference() // asvd init: the reference file name carries it
	cfg.KDensity, cfg.VDensity, cfg.KRank, cfg.VRank = 0.25, 0.5, 0, 0
	kRank, _ := RankFromDensity(cfg.KDensity, mc.HeadDim, mc.KVHeads)
	vRank, _ := RankFromDensity(cfg.VDensity, mc.HeadDim, mc.KVHeads)
	r := rand.New(rand.NewPCG(3, 4))
	v := func(n int) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(r.NormFloat64())
		}
		return out
	}
	p := &checkpoints.Projections{Hidden: mc.Hidden, KVDim: mc.KVDim()}
	for range mc.Layers {
		p.Layers = append(p.Layers, kv.Factors{Ak: v(kRank * mc.Hidden), Bk: v(mc.KVDim() * kRank), Av: v(vRank * mc.Hidden), Bv: v(mc.KVDim() * vRank), KRank: kRank, VRank: vRank})
	}
	p.Meta = Metadata(cfg, filepath.Base(m.Path), m.Digest, mc.Arch, uniform(kRank, mc.Layers), uniform(vRank, mc.Layers))
	return m, p
}

func sameBits(t *testing.T, got, want []kv.Factors) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d layers, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].KRank != want[i].KRank || got[i].VRank != want[i].VRank {
			t.Fatalf("layer %d ranks %d/%d, want %d/%d", i, got[i].KRank, got[i].VRank, want[i].KRank, want[i].VRank)
		}
		g, w := got[i].Tensors(), want[i].Tensors()
		for k := range w {
			if len(g[k]) != len(w[k]) {
				t.Fatalf("layer %d %s: %d values, want %d", i, kv.ExportNames[k], len(g[k]), len(w[k]))
			}
			for j := range w[k] {
				if math.Float32bits(g[k][j]) != math.Float32bits(w[k][j]) {
					t.Fatalf("layer %d %s[%d]: %v, want %v", i, kv.ExportNames[k], j, g[k][j], w[k][j])
				}
			}
		}
	}
}

// TestReferenceRoundTrip: cskv factors → reference .ckpt pair → Import
// gives the same bits, with the model, layout, ranks and source recorded.
func TestReferenceRoundTrip(t *testing.T) {
	m, p := storiesFactors(t)
	dir := t.TempDir()
	kPath, vPath, err := ExportReference(p, m.Config.HeadDim, m.Config.KVHeads, dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(kPath) != "density_k_0.25_v_0.5_quant_k_16_v_16_asvd__k.ckpt" || !strings.HasSuffix(vPath, "_asvd__v.ckpt") {
		t.Fatalf("files %s %s (defaults: asvd init, 16 bits, no window)", kPath, vPath)
	}
	for _, src := range []string{kPath, vPath, kPath + "," + vPath} {
		got, err := Import(m, src, "")
		if err != nil {
			t.Fatal(err)
		}
		sameBits(t, got.Layers, p.Layers)
		for k, v := range map[string]string{"base_digest": m.Digest, "rope_layout": "hf-rotate-half", "k_rank": "8", "v_rank": "16",
			"source_format": "cskv-ref", "source_rope_layout": "hf", "k_density": "0.25", "k_bits": "16", "head_dim": "8", "kv_heads": "4"} {
			if got.Meta[k] != v {
				t.Errorf("%s: meta %s = %q, want %q", src, k, got.Meta[k], v)
			}
		}
	}
	// The written projections file reads back as a cskv file.
	got, _ := Import(m, kPath, "")
	out := filepath.Join(dir, "imported.safetensors")
	if err := checkpoints.WriteProjections(out, got, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	back, err := checkpoints.ReadProjections(out)
	if err != nil {
		t.Fatal(err)
	}
	sameBits(t, back.Layers, p.Layers)
	// Without head_dim metadata and without a model the ranks cannot be checked.
	delete(back.Meta, "head_dim")
	if _, _, err := ExportReference(back, 0, 0, t.TempDir()); err == nil || !strings.Contains(err.Error(), "--model") {
		t.Fatalf("export without head_dim: %v", err)
	}
}

func TestReferenceNameRefusesInexpressibleRanks(t *testing.T) {
	m, p := storiesFactors(t)
	hd, kvh := m.Config.HeadDim, m.Config.KVHeads
	explicit := *p
	explicit.Meta = map[string]string{}
	for k, v := range p.Meta {
		explicit.Meta[k] = v
	}
	explicit.Meta["k_density"] = "explicit-rank"
	if _, err := ReferenceName(&explicit, hd, kvh); err == nil || !strings.Contains(err.Error(), "not expressible") {
		t.Fatalf("explicit rank: %v", err)
	}
	perLayer := *p
	perLayer.Layers = append([]kv.Factors(nil), p.Layers...)
	l := &perLayer.Layers[2]
	l.VRank = 12
	l.Av, l.Bv = make([]float32, 12*p.Hidden), make([]float32, p.KVDim*12)
	_, err := ReferenceName(&perLayer, hd, kvh)
	if err == nil || !strings.Contains(err.Error(), "layer 2 v rank 12 is not expressible") {
		t.Fatalf("per-layer rank: %v", err)
	}
	n, err := ReferenceName(p, hd, kvh)
	if err != nil || n.KDensity != 0.25 || n.VDensity != 0.5 || n.KBits != 16 || !n.ASVD || n.UseWindow {
		t.Fatalf("name %+v, %v", n, err)
	}
}

// TestImportSafetensorsLayouts: a plain safetensors file (no metadata) needs
// --rope-layout; with meta, Bk rows written in the adjacent-pair order come
// back in cskv's rotate-half order; a model of other shapes is refused.
func TestImportSafetensorsLayouts(t *testing.T) {
	m, p := storiesFactors(t)
	mc := m.Config
	dir := t.TempDir()
	write := func(name string, layers []kv.Factors) string {
		var ts []safetensors.Tensor
		for i, l := range layers {
			shapes := l.Shapes(p.Hidden, p.KVDim)
			for k, data := range l.Tensors() {
				ts = append(ts, safetensors.Tensor{Name: "model.layers." + strconv.Itoa(i) + ".self_attn." + kv.ExportNames[k] + ".weight",
					Shape: []int{shapes[k][0], shapes[k][1]}, DType: safetensors.F32, Data: data})
			}
		}
		path := filepath.Join(dir, name)
		if err := safetensors.Write(path, ts, nil); err != nil {
			t.Fatal(err)
		}
		return path
	}
	hf := write("hf.safetensors", p.Layers)
	if _, err := Import(m, hf, ""); err == nil || !strings.Contains(err.Error(), "--rope-layout") {
		t.Fatalf("no layout: %v", err)
	}
	got, err := Import(m, hf, RopeHF)
	if err != nil {
		t.Fatal(err)
	}
	sameBits(t, got.Layers, p.Layers)

	var metaLayers []kv.Factors
	for _, l := range p.Layers {
		l.Bk = model.RopeToAdjacent(l.Bk, mc.KVHeads, mc.HeadDim, l.KRank)
		metaLayers = append(metaLayers, l)
	}
	metaFile := write("meta.safetensors", metaLayers)
	got, err = Import(m, metaFile, RopeMeta)
	if err != nil {
		t.Fatal(err)
	}
	sameBits(t, got.Layers, p.Layers)
	if got.Meta["source_rope_layout"] != "meta" || got.Meta["rope_layout"] != "hf-rotate-half" {
		t.Fatalf("meta %v", got.Meta)
	}
	wrong, err := Import(m, metaFile, RopeHF) // the wrong claim is not detectable, but it must change the rows
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(wrong.Layers[0].Bk, p.Layers[0].Bk) {
		t.Fatal("meta and hf layouts gave the same Bk")
	}
	if _, err := Import(m, hf, "halves"); err == nil || !strings.Contains(err.Error(), `--rope-layout "halves"`) {
		t.Fatalf("bad layout: %v", err)
	}

	short := write("short.safetensors", p.Layers[:4])
	if _, err := Import(m, short, RopeHF); err == nil || !strings.Contains(err.Error(), "4 layers of factors, the model stories260K.gguf has 5") {
		t.Fatalf("layer count: %v", err)
	}
	// A cskv file made for another model is refused; its layout may not be overridden.
	other := *p
	other.Meta = map[string]string{"base_digest": "abc", "base_model": "other.gguf", "rope_layout": "hf-rotate-half"}
	cskvFile := filepath.Join(dir, "other.safetensors")
	if err := checkpoints.WriteProjections(cskvFile, &other, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	if _, err := Import(m, cskvFile, ""); err == nil || !strings.Contains(err.Error(), `made for base model "other.gguf"`) {
		t.Fatalf("other model: %v", err)
	}
	other.Meta["base_digest"] = m.Digest
	if err := checkpoints.WriteProjections(cskvFile, &other, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	if _, err := Import(m, cskvFile, RopeMeta); err == nil || !strings.Contains(err.Error(), "records rope_layout") {
		t.Fatalf("layout override: %v", err)
	}
}

func uniform(rank, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = rank
	}
	return out
}
