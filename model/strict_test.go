package model

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/model/gguf"
	"github.com/cskv/cskv/model/safetensors"
)

// fixtureConfig returns a family fixture's config.json as a map.
func fixtureConfig(t *testing.T, name string) (map[string]any, string) {
	t.Helper()
	dir := testassets.Path(t, "fixtures/families/"+name)
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

// variantDir writes a directory holding cfg as config.json and the fixture's
// weights (linked, or the given tensors when non-nil).
func variantDir(t *testing.T, fixture string, cfg map[string]any, tensors []safetensors.Tensor) string {
	t.Helper()
	out := t.TempDir()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if tensors != nil {
		if err := safetensors.Write(filepath.Join(out, "model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if err := os.Symlink(filepath.Join(fixture, "model.safetensors"), filepath.Join(out, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	return out
}

// Every config.json value cskv does not implement is refused with an error
// naming the key and printing the value as JSON.
func TestRefusedConfigValues(t *testing.T) {
	cases := []struct {
		fixture, name string
		edit          func(cfg map[string]any)
		want          []string
	}{
		{"llama31", "rope dynamic", func(c map[string]any) { c["rope_scaling"] = map[string]any{"rope_type": "dynamic", "factor": 2.0} }, []string{`"rope_scaling"`, `"dynamic"`, `{"factor":2,"rope_type":"dynamic"}`}},
		{"llama31", "rope longrope", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "longrope", "short_factor": []any{1.0}, "long_factor": []any{2.0}}
		}, []string{`"rope_scaling"`, `"longrope"`}},
		{"llama31", "rope unknown type", func(c map[string]any) { c["rope_scaling"] = map[string]any{"rope_type": "spiral"} }, []string{`"rope_scaling"`, `"spiral"`}},
		{"llama31", "rope no type", func(c map[string]any) { c["rope_scaling"] = map[string]any{"factor": 8.0} }, []string{`"rope_scaling"`, `{"factor":8}`}},
		{"llama31", "rope key of another type", func(c map[string]any) {
			c["rope_scaling"].(map[string]any)["beta_fast"] = 16.0
		}, []string{`"rope_scaling"`, `"beta_fast"`, `"llama3"`}},
		{"llama31", "rope types disagree", func(c map[string]any) { c["rope_scaling"].(map[string]any)["type"] = "linear" }, []string{`"rope_scaling"`, `"llama3"`, `"linear"`}},
		{"llama31", "attention_bias", func(c map[string]any) { c["attention_bias"] = true }, []string{`"attention_bias": true`}},
		{"llama31", "mlp_bias", func(c map[string]any) { c["mlp_bias"] = true }, []string{`"mlp_bias": true`}},
		{"llama31", "hidden_act", func(c map[string]any) { c["hidden_act"] = "gelu" }, []string{`"hidden_act": "gelu"`}},
		{"llama31", "partial_rotary_factor", func(c map[string]any) { c["partial_rotary_factor"] = 0.5 }, []string{`"partial_rotary_factor": 0.5`}},
		{"llama31", "unknown key", func(c map[string]any) { c["quantization_config"] = map[string]any{"bits": 4.0} }, []string{`"quantization_config"`, `{"bits":4}`}},
		{"llama31", "sliding window on llama", func(c map[string]any) { c["sliding_window"] = 4096.0 }, []string{`"sliding_window"`, `4096`}},
		{"qwen25_yarn", "qwen2 use_sliding_window", func(c map[string]any) { c["use_sliding_window"] = true }, []string{`"use_sliding_window": true`}},
		{"qwen25_yarn", "qwen2 mrope", func(c map[string]any) { c["use_mrope"] = true }, []string{`"use_mrope": true`}},
		{"qwen3", "qwen3 attention_bias", func(c map[string]any) { c["attention_bias"] = true }, []string{`"attention_bias": true`}},
		{"phi3", "phi3 longrope", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "longrope", "short_factor": []any{1.0}, "long_factor": []any{1.0}}
		}, []string{`"rope_scaling"`, `"longrope"`}},
		{"gemma2", "gemma2 activation", func(c map[string]any) { c["hidden_activation"] = "relu" }, []string{`"hidden_activation": "relu"`}},
		{"gemma2", "gemma2 layer types", func(c map[string]any) { c["layer_types"] = []any{"sliding_attention", "chunked_attention"} }, []string{`"layer_types[1]": "chunked_attention"`}},
		{"gemma2", "rope_parameters per layer type", func(c map[string]any) {
			c["rope_parameters"] = map[string]any{"full_attention": map[string]any{"rope_type": "default"}}
		}, []string{`"rope_parameters"`, `"full_attention"`}},
	}
	for _, tc := range cases {
		cfg, dir := fixtureConfig(t, tc.fixture)
		tc.edit(cfg)
		m, err := Open(variantDir(t, dir, cfg, nil))
		if err == nil {
			m.Close()
			t.Errorf("%s: opened", tc.name)
			continue
		}
		malformed := map[string]bool{"rope no type": true, "rope types disagree": true, "rope_parameters per layer type": true}
		if !malformed[tc.name] && !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: error %q is not ErrUnsupported", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %s", tc.name, err, w)
			}
		}
	}
}

// The no-op scalings load and give plain RoPE; rope_parameters (transformers
// v5) carries θ.
func TestNoOpScalings(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(cfg map[string]any)
		theta float64
	}{
		{"rope_type default", func(c map[string]any) { c["rope_scaling"] = map[string]any{"rope_type": "default"} }, 10000},
		{"linear factor 1", func(c map[string]any) { c["rope_scaling"] = map[string]any{"type": "linear", "factor": 1.0} }, 10000},
		{"null", func(c map[string]any) { c["rope_scaling"] = nil }, 10000},
		{"rope_parameters", func(c map[string]any) {
			delete(c, "rope_theta")
			c["rope_parameters"] = map[string]any{"rope_type": "default", "rope_theta": 500000.0}
		}, 500000},
	}
	for _, tc := range cases {
		cfg, dir := fixtureConfig(t, "phi3")
		tc.edit(cfg)
		m, err := Open(variantDir(t, dir, cfg, nil))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if s := m.Config.RopeScaling; s.Type != "" || m.Config.RopeBase != tc.theta {
			t.Errorf("%s: scaling %+v base %g, want none and %g", tc.name, s, m.Config.RopeBase, tc.theta)
		}
		m.Close()
	}
	// rope_parameters with llama3 gives llama31's frequencies
	cfg, dir := fixtureConfig(t, "llama31")
	rs := cfg["rope_scaling"].(map[string]any)
	rs["rope_theta"] = cfg["rope_theta"]
	delete(cfg, "rope_scaling")
	delete(cfg, "rope_theta")
	cfg["rope_parameters"] = rs
	m, err := Open(variantDir(t, dir, cfg, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	g, _ := loadFamilyGoldens(t)
	r, err := m.Config.Rope()
	if err != nil {
		t.Fatal(err)
	}
	checkInvFreq(t, r, g.Fixtures["llama31"].Rope.InvFreq, 1, g.Tolerances.InvFreqRel)
}

// fixtureTensors reads every tensor of a fixture.
func fixtureTensors(t *testing.T, dir string) []safetensors.Tensor {
	t.Helper()
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	var out []safetensors.Tensor
	for _, n := range set.Names() {
		data, shape, err := set.ReadFloat32(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, safetensors.Tensor{Name: n, Shape: shape, DType: safetensors.F32, Data: data})
	}
	return out
}

// A layer tensor the loader does not consume is an error naming it; a
// precomputed rotary_emb.inv_freq is skipped and listed.
func TestUnconsumedTensors(t *testing.T) {
	cfg, dir := fixtureConfig(t, "qwen3")
	base := fixtureTensors(t, dir)
	extra := append(base, safetensors.Tensor{Name: "model.layers.1.self_attn.o_proj.bias", Shape: []int{64}, DType: safetensors.F32, Data: make([]float32, 64)})
	if m, err := Open(variantDir(t, dir, cfg, extra)); err == nil {
		m.Close()
		t.Error("o_proj.bias: opened")
	} else if !strings.Contains(err.Error(), `"model.layers.1.self_attn.o_proj.bias"`) {
		t.Errorf("o_proj.bias: error %q does not name the tensor", err)
	}
	// a Qwen3 checkpoint relabelled qwen2 leaves q_norm/k_norm unused
	cfg2 := map[string]any{}
	for k, v := range cfg {
		cfg2[k] = v
	}
	cfg2["model_type"] = "qwen2"
	delete(cfg2, "attention_bias")
	if m, err := Open(variantDir(t, dir, cfg2, nil)); err == nil {
		m.Close()
		t.Error("qwen3 as qwen2: opened")
	} else if !strings.Contains(err.Error(), "missing tensor") && !strings.Contains(err.Error(), "norm") {
		t.Errorf("qwen3 as qwen2: error %q", err)
	}
	harmless := append(base, safetensors.Tensor{Name: "model.layers.0.self_attn.rotary_emb.inv_freq", Shape: []int{16}, DType: safetensors.F32, Data: make([]float32, 16)})
	m, err := Open(variantDir(t, dir, cfg, harmless))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.Skipped) != 1 || m.Skipped[0] != "model.layers.0.self_attn.rotary_emb.inv_freq" {
		t.Errorf("skipped %v", m.Skipped)
	}
}

// GGUF metadata and tensors cskv does not implement are refused by name.
func TestRefusedGGUF(t *testing.T) {
	src, err := gguf.Open(testassets.Path(t, "fixtures/families/llama31.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var tensors []gguf.WriteTensor
	for _, ti := range src.Tensors {
		data, shape, err := src.ReadTensor(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		tensors = append(tensors, gguf.WriteTensor{Name: ti.Name, Shape: shape, Type: gguf.F32, Data: data})
	}
	write := func(edit func(kv []gguf.KeyValue) []gguf.KeyValue) string {
		kv := edit(append([]gguf.KeyValue(nil), src.KV...))
		p := filepath.Join(t.TempDir(), "m.gguf")
		if err := gguf.Write(p, 3, kv, tensors); err != nil {
			t.Fatal(err)
		}
		return p
	}
	set := func(key string, v any) func(kv []gguf.KeyValue) []gguf.KeyValue {
		return func(kv []gguf.KeyValue) []gguf.KeyValue {
			for i := range kv {
				if kv[i].Key == key {
					kv[i] = gguf.KV(key, v)
					return kv
				}
			}
			return append(kv, gguf.KV(key, v))
		}
	}
	cases := []struct {
		name string
		edit func(kv []gguf.KeyValue) []gguf.KeyValue
		want []string
	}{
		{"experts", set("llama.expert_count", uint32(8)), []string{`"llama.expert_count": 8`}},
		{"scaling type", set("llama.rope.scaling.type", "longrope"), []string{`"llama.rope.scaling.type": "longrope"`}},
		{"unknown key", set("llama.attention.sliding_window", uint32(4096)), []string{`"llama.attention.sliding_window"`, "4096"}},
		{"rope_freqs on qwen2", set("general.architecture", "qwen2"), []string{`"rope_freqs.weight"`, `"qwen2"`}},
		{"rope_freqs with linear", set("llama.rope.scaling.type", "linear"), []string{`"rope_freqs.weight"`, `"linear"`}},
	}
	for _, tc := range cases {
		p := write(tc.edit)
		if tc.name == "rope_freqs on qwen2" { // the arch's keys must exist for the key table
			p = write(func(kv []gguf.KeyValue) []gguf.KeyValue {
				out := []gguf.KeyValue{gguf.KV("general.architecture", "qwen2")}
				for _, e := range kv {
					if strings.HasPrefix(e.Key, "llama.") {
						out = append(out, gguf.KV("qwen2."+strings.TrimPrefix(e.Key, "llama."), e.Value))
					}
				}
				return out
			})
		}
		m, err := Open(p)
		if err == nil {
			m.Close()
			t.Errorf("%s: opened", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %s", tc.name, err, w)
			}
		}
	}
	// linear factor 1 is a no-op and loads (with rope_freqs it is plain llama3)
	m, err := Open(write(func(kv []gguf.KeyValue) []gguf.KeyValue {
		kv = set("llama.rope.scaling.type", "linear")(kv)
		return set("llama.rope.scaling.factor", float32(1))(kv)
	}))
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.RopeScaling.Type != "freqs" {
		t.Errorf("scaling %+v, want the rope_freqs divisors", m.Config.RopeScaling)
	}
	m.Close()
}

// √hidden is rounded as the embedding's dtype rounds it (Gemma-2 multiplies
// by torch.tensor(hidden**0.5, dtype)): exact 8 and 48, rounded for 3072.
func TestEmbedScaleRounding(t *testing.T) {
	for _, c := range []struct {
		typ    string
		hidden int
		want   float32
	}{{"F32", 64, 8}, {"BF16", 2304, 48}, {"BF16", 3072, 55.5}, {"F16", 3072, 55.4375}, {"F32", 3072, float32(math.Sqrt(3072))}} {
		if got := roundAs(c.typ, float32(math.Sqrt(float64(c.hidden)))); got != c.want {
			t.Errorf("%s √%d = %g, want %g", c.typ, c.hidden, got, c.want)
		}
	}
}

// Mistral's sliding_window: a window at least as long as the sequence is
// plain causal attention (the numbers of the same weights as llama), and a
// short one changes them, with token-by-token decoding equal to the forward.
func TestMistralSlidingWindow(t *testing.T) {
	cfg, dir := fixtureConfig(t, "llama31")
	delete(cfg, "rope_scaling")
	delete(cfg, "attention_bias")
	delete(cfg, "mlp_bias")
	delete(cfg, "pretraining_tp")
	open := func(mt string, window any) *Model {
		c := map[string]any{}
		for k, v := range cfg {
			c[k] = v
		}
		c["model_type"] = mt
		if window != nil {
			c["sliding_window"] = window
		}
		m, err := Open(variantDir(t, dir, c, nil))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	ids := make([]int, 40)
	for i := range ids {
		ids[i] = (i*37 + 11) % 512
	}
	ref, err := open("llama", nil).Forward([][]int{ids}, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := open("mistral", 40.0)
	if long.Config.Window(1) != 40 {
		t.Fatalf("windows %v", long.Config.Windows)
	}
	got, _ := long.Forward([][]int{ids}, nil)
	if !slices.Equal(got, ref) {
		t.Error("window 40 over 40 tokens differs from plain attention")
	}
	short := open("mistral", 8.0)
	sw, _ := short.Forward([][]int{ids}, nil)
	if slices.Equal(sw, ref) {
		t.Error("window 8 changed nothing")
	}
	d, _ := short.NewDecoder(len(ids), nil)
	V := short.Config.Vocab
	var maxDiff float64
	for p, id := range ids {
		row, err := d.Step(id)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range row {
			maxDiff = math.Max(maxDiff, math.Abs(float64(v-sw[p*V+i])))
		}
	}
	if maxDiff > 1e-4 {
		t.Errorf("decode vs forward with window 8: max |Δ| %g", maxDiff)
	}
	if nullW := open("mistral", nil); nullW.Config.Window(0) != 4096 {
		t.Errorf("absent sliding_window gives %v, want Mistral's default 4096", nullW.Config.Windows)
	}
}

// An untied config whose file lacks lm_head.weight is refused (transformers
// would initialise it randomly), not silently tied.
func TestMissingUntiedOutput(t *testing.T) {
	cfg, dir := fixtureConfig(t, "llama31")
	var tensors []safetensors.Tensor
	for _, tn := range fixtureTensors(t, dir) {
		if tn.Name != "lm_head.weight" {
			tensors = append(tensors, tn)
		}
	}
	m, err := Open(variantDir(t, dir, cfg, tensors))
	if err == nil {
		m.Close()
		t.Fatal("opened")
	}
	if !strings.Contains(err.Error(), `"lm_head.weight"`) || !strings.Contains(err.Error(), "tie_word_embeddings") {
		t.Errorf("error %q", err)
	}
}
