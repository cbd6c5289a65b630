package model

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/cskv/cskv/model/safetensors"
	"github.com/cskv/cskv/model/tokenizer"
)

// hfSource reads tensors from a Hugging Face safetensors directory.
type hfSource struct{ s *safetensors.Set }

func (s hfSource) read(name string) ([]float32, []int, error) { return s.s.ReadFloat32(name) }
func (s hfSource) has(name string) bool                       { _, ok := s.s.Info(name); return ok }
func (s hfSource) names() map[Role]string                     { return hfNames }
func (s hfSource) close() error                               { return s.s.Close() }
func (s hfSource) list() []TensorEntry {
	var out []TensorEntry
	for _, n := range s.s.Names() {
		ti, _ := s.s.Info(n)
		out = append(out, TensorEntry{Name: n, Shape: ti.Shape, Type: string(ti.DType)})
	}
	return sortedEntries(out)
}

// hfKey describes one config.json field.
type hfKey struct {
	key      string
	required bool
	def      float64
	set      func(c *Config, v float64)
}

var hfKeys = []hfKey{
	{"hidden_size", true, 0, func(c *Config, v float64) { c.Hidden = int(v) }},
	{"num_hidden_layers", true, 0, func(c *Config, v float64) { c.Layers = int(v) }},
	{"num_attention_heads", true, 0, func(c *Config, v float64) { c.Heads = int(v) }},
	{"num_key_value_heads", false, -1, func(c *Config, v float64) { c.KVHeads = int(v) }},
	{"intermediate_size", true, 0, func(c *Config, v float64) { c.FFN = int(v) }},
	{"vocab_size", true, 0, func(c *Config, v float64) { c.Vocab = int(v) }},
	{"max_position_embeddings", false, 2048, func(c *Config, v float64) { c.ContextLength = int(v) }},
	{"rope_theta", false, 10000, func(c *Config, v float64) { c.RopeBase = v }},
	{"rms_norm_eps", true, 0, func(c *Config, v float64) { c.RMSEps = v }},
	{"head_dim", false, -1, func(c *Config, v float64) { c.HeadDim = int(v) }},
}

// modelTypes maps config.json model_type to our architecture names.
var modelTypes = map[string]string{"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}

func openHF(dir string) (*Model, error) {
	cfgPath := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", dir, err)
	}
	c, err := parseHFConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("open model %s: config.json: %w", dir, err)
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", dir, err)
	}
	m := &Model{Config: c, Path: dir, Format: "safetensors", src: hfSource{set}, rope: ropeHalves}
	shards, err := shardFiles(dir)
	if err != nil {
		set.Close()
		return nil, fmt.Errorf("open model %s: %w", dir, err)
	}
	files := []string{cfgPath}
	var total int64
	for _, f := range shards {
		files = append(files, f)
		total += fileSize(f)
	}
	if m.Digest, err = digestFiles(files...); err != nil {
		set.Close()
		return nil, err
	}
	m.keepAll = total < keepAllBytes
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err == nil {
		tok, err := tokenizer.LoadHF(dir)
		if err != nil {
			set.Close()
			return nil, fmt.Errorf("open model %s: tokenizer: %w", dir, err)
		}
		m.Tokenizer = tok
	}
	return m, nil
}

func parseHFConfig(raw []byte) (Config, error) {
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		return Config{}, err
	}
	mt, _ := fields["model_type"].(string)
	arch, ok := modelTypes[mt]
	if !ok {
		return Config{}, fmt.Errorf("model_type %q: %w (supported: llama, mistral, qwen2)", mt, ErrUnsupported)
	}
	if rs, ok := fields["rope_scaling"]; ok && rs != nil {
		return Config{}, fmt.Errorf("rope_scaling %v: %w", rs, ErrUnsupported)
	}
	c := Config{Arch: arch, QKVBias: archs[arch].qkvBias}
	for _, k := range hfKeys {
		v, present := fields[k.key]
		f, isNum := v.(float64)
		switch {
		case !present || v == nil:
			if k.required {
				return Config{}, fmt.Errorf("missing key %q", k.key)
			}
			f = k.def
		case !isNum:
			return Config{}, fmt.Errorf("key %q = %v is not a number", k.key, v)
		case f < 0 || f > 1<<31:
			return Config{}, fmt.Errorf("key %q = %g out of range", k.key, f)
		}
		k.set(&c, f)
	}
	if c.KVHeads < 0 {
		c.KVHeads = c.Heads
	}
	if c.HeadDim < 0 && c.Heads > 0 {
		c.HeadDim = c.Hidden / c.Heads
	}
	if t, ok := fields["tie_word_embeddings"].(bool); ok {
		c.TiedOutput = t
	}
	return c, nil
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// shardFiles lists a directory's weight files: model.safetensors, or the
// distinct shards named by model.safetensors.index.json, sorted.
func shardFiles(dir string) ([]string, error) {
	idx := filepath.Join(dir, "model.safetensors.index.json")
	raw, err := os.ReadFile(idx)
	if os.IsNotExist(err) {
		return []string{filepath.Join(dir, "model.safetensors")}, nil
	}
	if err != nil {
		return nil, err
	}
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &index); err != nil {
		return nil, fmt.Errorf("%s: %w", idx, err)
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range index.WeightMap {
		if !seen[f] {
			seen[f] = true
			out = append(out, filepath.Join(dir, f))
		}
	}
	sort.Strings(out)
	return out, nil
}
