package model

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model/gguf"
	"github.com/cskv/cskv/model/safetensors"
)

// familyGoldens is the part of ../shared/fixtures/families/goldens.json these
// tests use (an independent float64 PyTorch reference; see its PROVENANCE.md).
type familyGoldens struct {
	IDs        []int `json:"ids"`
	Tolerances struct {
		LogitsAbs  float64 `json:"logits_abs"`
		CEAbs      float64 `json:"ce_abs"`
		InvFreqRel float64 `json:"inv_freq_rel"`
	} `json:"tolerances"`
	Fixtures map[string]struct {
		Path string `json:"path"`
		Rope struct {
			InvFreq         []float64 `json:"inv_freq"`
			AttentionFactor float64   `json:"attention_factor"`
		} `json:"rope"`
		SlidingWindowPerLayer []*int `json:"sliding_window_per_layer"`
		familyRun
		Compressed struct {
			Projections string `json:"projections"`
			familyRun
		} `json:"compressed"`
	} `json:"fixtures"`
	RopeTestVectors map[string]struct {
		Config struct {
			HiddenSize        int            `json:"hidden_size"`
			NumAttentionHeads int            `json:"num_attention_heads"`
			RopeTheta         float64        `json:"rope_theta"`
			MaxPositionEmb    int            `json:"max_position_embeddings"`
			RopeScaling       map[string]any `json:"rope_scaling"`
		} `json:"config"`
		Dim             int       `json:"dim"`
		AttentionFactor float64   `json:"attention_factor"`
		InvFreq         []float64 `json:"inv_freq"`
		GGUFRopeFreqs   []float64 `json:"gguf_rope_freqs"`
	} `json:"rope_test_vectors"`
}

// familyRun is one protocol's numbers: logits rows at LogitPositions of a
// forward over the first 48 ids, greedy ids there, and the mean next-token
// cross-entropy of a forward over all 96.
type familyRun struct {
	LogitPositions []int       `json:"logit_positions"`
	Logits         [][]float64 `json:"logits"`
	Greedy         []int       `json:"greedy"`
	NearTies       []int       `json:"greedy_near_ties"`
	CE96           float64     `json:"ce_96"`
}

func loadFamilyGoldens(t *testing.T) (familyGoldens, string) {
	t.Helper()
	p := testassets.Path(t, "fixtures/families/goldens.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var g familyGoldens
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	return g, filepath.Dir(p)
}

// testOverride is the CSKV compressed path of the goldens, written here
// independently of eval: every token's K̂ = X·Akᵀ·Bkᵀ (+ the model's k bias),
// V̂ likewise, and no key stays original. B's rows are in the rotate-half
// order, which is the in-memory order of every model (a GGUF's Q/K rows are
// permuted at load), so the GGUF uses llama31/proj.safetensors as it is.
type testOverride struct {
	ak, bk, av, bv []float32
	rk, rv         int
	bkBias, bvBias []float32
	d, kv          int
}

func (o *testOverride) Window() (int, kv.WindowMode) { return 0, kv.WindowBlock }
func (o *testOverride) Replace(kr, vr, x, _, _ []float32, nSeq, T int) error {
	n := nSeq * T
	for _, side := range []struct {
		out, a, b, bias []float32
		r               int
	}{{kr, o.ak, o.bk, o.bkBias, o.rk}, {vr, o.av, o.bv, o.bvBias, o.rv}} {
		feat := make([]float32, n*side.r)
		Linear(feat, x, side.a, nil, n, side.r, o.d)
		Linear(side.out, feat, side.b, side.bias, n, o.kv, side.r)
	}
	return nil
}

func testOverrides(t *testing.T, m *Model, path string) []KVOverride {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := m.Config
	var out []KVOverride
	for l := 0; l < c.Layers; l++ {
		read := func(side string) ([]float32, int) {
			data, shape, err := f.ReadFloat32(fmt.Sprintf("model.layers.%d.self_attn.%s.weight", l, side))
			if err != nil {
				t.Fatal(err)
			}
			return data, shape[0]
		}
		b, err := m.Block(l)
		if err != nil {
			t.Fatal(err)
		}
		o := &testOverride{bkBias: b.Bk, bvBias: b.Bv, d: c.Hidden, kv: c.KVDim()}
		o.ak, o.rk = read("k_proj_a")
		o.bk, _ = read("k_proj_b")
		o.av, o.rv = read("v_proj_a")
		o.bv, _ = read("v_proj_b")
		out = append(out, o)
	}
	return out
}

// checkRun compares a model's numbers with one protocol's goldens.
func checkRun(t *testing.T, name string, m *Model, g familyGoldens, want familyRun, ovs []KVOverride) {
	t.Helper()
	V := m.Config.Vocab
	logits, err := m.Forward([][]int{g.IDs[:48]}, ovs)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(want.LogitPositions) != len(want.Logits) || len(want.Logits) == 0 {
		t.Fatalf("%s: %d logit positions for %d rows", name, len(want.LogitPositions), len(want.Logits))
	}
	var maxDiff float64
	for r, p := range want.LogitPositions {
		for i, w := range want.Logits[r] {
			maxDiff = math.Max(maxDiff, math.Abs(float64(logits[p*V+i])-w))
		}
	}
	if maxDiff > g.Tolerances.LogitsAbs {
		t.Errorf("%s: logits max |Δ| %.3g > %g", name, maxDiff, g.Tolerances.LogitsAbs)
	}
	mismatch := 0
	for p, w := range want.Greedy {
		if got := Argmax(logits[p*V : (p+1)*V]); got != w && !slices.Contains(want.NearTies, p) {
			mismatch++
		}
	}
	if mismatch > 0 {
		t.Errorf("%s: %d greedy ids differ", name, mismatch)
	}
	full, err := m.Forward([][]int{g.IDs}, ovs)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	sum, n := NLL(full, append(slices.Clone(g.IDs[1:]), -1), V)
	ce := sum / float64(n)
	if d := math.Abs(ce - want.CE96); d > g.Tolerances.CEAbs {
		t.Errorf("%s: ce_96 %.8f, golden %.8f (|Δ| %.2g > %g)", name, ce, want.CE96, d, g.Tolerances.CEAbs)
	}
	t.Logf("%s: logits max |Δ| %.2g (tol %g), ce_96 %.8f vs %.8f (|Δ| %.2g, tol %g), greedy equal at %d/%d",
		name, maxDiff, g.Tolerances.LogitsAbs, ce, want.CE96, math.Abs(ce-want.CE96), g.Tolerances.CEAbs, len(want.Greedy)-mismatch, len(want.Greedy))
}

// Every family fixture, HF directory and GGUF, against the float64
// reference: scaled inverse frequencies and attention factor, logits at the
// listed positions, greedy ids and mean cross-entropy, plain and with every
// token's K/V rebuilt from proj.safetensors.
func TestFamilyGoldens(t *testing.T) {
	g, dir := loadFamilyGoldens(t)
	for _, name := range []string{"llama32", "llama31", "llama31_gguf", "qwen25_yarn", "qwen3", "phi3", "gemma2"} {
		fx, ok := g.Fixtures[name]
		if !ok {
			t.Fatalf("goldens have no fixture %s", name)
		}
		t.Run(name, func(t *testing.T) {
			m, err := Open(filepath.Join(dir, fx.Path))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			r, err := m.Config.Rope()
			if err != nil {
				t.Fatal(err)
			}
			checkInvFreq(t, r, fx.Rope.InvFreq, fx.Rope.AttentionFactor, g.Tolerances.InvFreqRel)
			for l, w := range fx.SlidingWindowPerLayer {
				want := 0
				if w != nil {
					want = *w
				}
				if got := m.Config.Window(l); got != want {
					t.Errorf("layer %d window %d, want %d", l, got, want)
				}
			}
			checkRun(t, name+" plain", m, g, fx.familyRun, nil)
			comp := fx.Compressed.familyRun
			comp.LogitPositions = fx.LogitPositions // listed once, for both protocols
			checkRun(t, name+" compressed", m, g, comp, testOverrides(t, m, filepath.Join(dir, fx.Compressed.Projections)))
		})
	}
}

func checkInvFreq(t *testing.T, r Rope, want []float64, af, rel float64) {
	t.Helper()
	if len(r.InvFreq) != len(want) {
		t.Fatalf("%d inverse frequencies, want %d", len(r.InvFreq), len(want))
	}
	for i, w := range want {
		if d := math.Abs(r.InvFreq[i]-w) / w; d > rel {
			t.Errorf("inv_freq[%d] = %.12g, want %.12g (rel %.2g > %g)", i, r.InvFreq[i], w, d, rel)
		}
	}
	if math.Abs(r.AttentionFactor-af) > 1e-9 {
		t.Errorf("attention factor %.12g, want %.12g", r.AttentionFactor, af)
	}
}

// The full-size RoPE test vectors (Llama-3.2-1B, Llama-3.1-8B, Qwen2.5 YaRN,
// linear) through the config.json parser, and the GGUF divisors where given.
func TestRopeTestVectors(t *testing.T) {
	g, _ := loadFamilyGoldens(t)
	if len(g.RopeTestVectors) == 0 {
		t.Fatal("no rope test vectors")
	}
	for name, tv := range g.RopeTestVectors {
		cfg := map[string]any{"model_type": "llama", "hidden_size": tv.Config.HiddenSize, "num_attention_heads": tv.Config.NumAttentionHeads,
			"num_hidden_layers": 1, "intermediate_size": 1, "vocab_size": 1, "rms_norm_eps": 1e-5,
			"rope_theta": tv.Config.RopeTheta, "max_position_embeddings": tv.Config.MaxPositionEmb, "rope_scaling": tv.Config.RopeScaling}
		raw, _ := json.Marshal(cfg)
		c, err := parseHFConfig(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r, err := c.Rope()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkInvFreq(t, r, tv.InvFreq, tv.AttentionFactor, g.Tolerances.InvFreqRel)
		if tv.GGUFRopeFreqs != nil {
			div := make([]float32, len(tv.GGUFRopeFreqs))
			for i, d := range tv.GGUFRopeFreqs {
				div[i] = float32(d)
			}
			rg, err := RopeScaling{Type: "freqs", Divisors: div}.Rope(tv.Config.RopeTheta, tv.Dim, 0)
			if err != nil {
				t.Fatal(err)
			}
			checkInvFreq(t, rg, tv.InvFreq, 1, g.Tolerances.InvFreqRel)
		}
	}
}

// Token-by-token decoding (per-layer caches; windows, soft-caps and key
// norms applied at each step) equals the batched forward on every fixture.
func TestFamilyDecodeEqualsForward(t *testing.T) {
	g, dir := loadFamilyGoldens(t)
	for _, name := range []string{"llama32", "llama31_gguf", "qwen25_yarn", "qwen3", "phi3", "gemma2"} {
		m, err := Open(filepath.Join(dir, g.Fixtures[name].Path))
		if err != nil {
			t.Fatal(err)
		}
		ids := g.IDs[:24]
		want, err := m.Forward([][]int{ids}, nil)
		if err != nil {
			t.Fatal(err)
		}
		d, err := m.NewDecoder(len(ids), nil)
		if err != nil {
			t.Fatal(err)
		}
		V := m.Config.Vocab
		var maxDiff float64
		for p, id := range ids {
			got, err := d.Step(id)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range got {
				maxDiff = math.Max(maxDiff, math.Abs(float64(v-want[p*V+i])))
			}
		}
		if maxDiff > 1e-4 {
			t.Errorf("%s: decode vs forward max |Δ| %.3g > 1e-4", name, maxDiff)
		}
		m.Close()
	}
}

// convert writes the GGUF's rope_freqs.weight as the llama3 rope_scaling it
// equals, and the converted directory gives the same logits and frequencies.
func TestConvertKeepsRopeScaling(t *testing.T) {
	g, dir := loadFamilyGoldens(t)
	m, err := Open(filepath.Join(dir, "llama31.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := filepath.Join(t.TempDir(), "hf")
	if err := m.ConvertHF(out); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		RopeScaling map[string]any `json:"rope_scaling"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.RopeScaling["rope_type"] != "llama3" || cfg.RopeScaling["factor"] != 8.0 {
		t.Errorf("rope_scaling %v, want llama3 factor 8", cfg.RopeScaling)
	}
	hf, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	r, err := hf.Config.Rope()
	if err != nil {
		t.Fatal(err)
	}
	checkInvFreq(t, r, g.Fixtures["llama31"].Rope.InvFreq, 1, g.Tolerances.InvFreqRel)
	checkRun(t, "converted llama31.gguf", hf, g, g.Fixtures["llama31"].familyRun, nil)
}

// hfToGGUF writes an HF fixture as llama.cpp writes a GGUF of a
// rotate-half architecture (its tensor names, the given metadata).
func hfToGGUF(t *testing.T, dir string, typ gguf.TensorType, kv []gguf.KeyValue) string {
	t.Helper()
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	rename := strings.NewReplacer( // llama.cpp's names (tensor_mapping.py)
		"model.embed_tokens.weight", "token_embd.weight", "model.norm.weight", "output_norm.weight", "lm_head.weight", "output.weight",
		"model.layers.", "blk.", ".input_layernorm.", ".attn_norm.", ".post_attention_layernorm.", ".ffn_norm.",
		".self_attn.q_proj.", ".attn_q.", ".self_attn.k_proj.", ".attn_k.", ".self_attn.v_proj.", ".attn_v.",
		".self_attn.o_proj.", ".attn_output.", ".self_attn.q_norm.", ".attn_q_norm.", ".self_attn.k_norm.", ".attn_k_norm.",
		".mlp.gate_proj.", ".ffn_gate.", ".mlp.up_proj.", ".ffn_up.", ".mlp.down_proj.", ".ffn_down.")
	var tensors []gguf.WriteTensor
	for _, n := range set.Names() {
		data, shape, err := set.ReadFloat32(n)
		if err != nil {
			t.Fatal(err)
		}
		tensors = append(tensors, gguf.WriteTensor{Name: rename.Replace(n), Shape: shape, Type: typ, Data: data})
	}
	p := filepath.Join(t.TempDir(), "m.gguf")
	if err := gguf.Write(p, 3, kv, tensors); err != nil {
		t.Fatal(err)
	}
	return p
}

// The qwen3 fixture as a Qwen3 GGUF (BF16 kept) and qwen25_yarn as a Qwen2
// GGUF with {arch}.rope.scaling.* keys give the HF goldens.
func TestRewrittenGGUF(t *testing.T) {
	g, dir := loadFamilyGoldens(t)
	common := func(arch string, ctx uint32, base, eps float32) []gguf.KeyValue {
		return []gguf.KeyValue{
			gguf.KV("general.architecture", arch), gguf.KV(arch+".block_count", uint32(2)),
			gguf.KV(arch+".context_length", ctx), gguf.KV(arch+".embedding_length", uint32(64)),
			gguf.KV(arch+".feed_forward_length", uint32(128)), gguf.KV(arch+".attention.head_count", uint32(4)),
			gguf.KV(arch+".attention.head_count_kv", uint32(2)), gguf.KV(arch+".rope.freq_base", base),
			gguf.KV(arch+".attention.layer_norm_rms_epsilon", eps),
		}
	}
	qwen3 := append(common("qwen3", 40960, 1e6, 1e-6), gguf.KV("qwen3.attention.key_length", uint32(32)), gguf.KV("qwen3.attention.value_length", uint32(32)))
	yarn := append(common("qwen2", 131072, 1e6, 1e-6), gguf.KV("qwen2.rope.scaling.type", "yarn"),
		gguf.KV("qwen2.rope.scaling.factor", float32(4)), gguf.KV("qwen2.rope.scaling.original_context_length", uint32(32768)))
	for _, c := range []struct {
		fixture string
		typ     gguf.TensorType
		kv      []gguf.KeyValue
	}{{"qwen3", gguf.BF16, qwen3}, {"qwen25_yarn", gguf.F32, yarn}} {
		m, err := Open(hfToGGUF(t, filepath.Join(dir, c.fixture), c.typ, c.kv))
		if err != nil {
			t.Fatal(err)
		}
		fx := g.Fixtures[c.fixture]
		r, err := m.Config.Rope()
		if err != nil {
			t.Fatal(err)
		}
		checkInvFreq(t, r, fx.Rope.InvFreq, fx.Rope.AttentionFactor, g.Tolerances.InvFreqRel)
		checkRun(t, c.fixture+" as GGUF", m, g, fx.familyRun, nil)
		m.Close()
	}
}
