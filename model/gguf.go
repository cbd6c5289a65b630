package model

import (
	"fmt"
	"strings"

	"github.com/cskv/cskv/model/gguf"
	"github.com/cskv/cskv/model/tokenizer"
)

// ggufSource reads tensors from a GGUF file.
type ggufSource struct{ f *gguf.File }

func (s ggufSource) read(name string) ([]float32, []int, error) { return s.f.ReadTensor(name) }
func (s ggufSource) has(name string) bool                       { _, ok := s.f.Tensor(name); return ok }
func (s ggufSource) names() map[Role]string                     { return ggufNames }
func (s ggufSource) close() error                               { return s.f.Close() }
func (s ggufSource) list() []TensorEntry {
	var out []TensorEntry
	for _, t := range s.f.Tensors {
		out = append(out, TensorEntry{Name: t.Name, Shape: t.Shape(), Type: t.Type.String()})
	}
	return out
}

// ggufKey is one architecture metadata key a GGUF loader understands ("%s"
// is the architecture name). apply reads the value (nil when absent) or
// returns an error naming the key and the value cskv does not implement.
type ggufKey struct {
	key   string
	apply func(c *Config, key string, v any) error
}

// ggufNum is a numeric key; absent gives def, or an error when required.
func ggufNum(key string, required bool, def float64, set func(c *Config, v float64)) ggufKey {
	return ggufKey{key, func(c *Config, k string, v any) error {
		f, ok := gguf.AsFloat(v)
		switch {
		case v == nil && required:
			return fmt.Errorf("missing metadata %q", k)
		case v == nil:
			f = def
		case !ok:
			return fmt.Errorf("metadata %q = %s is not a number", k, jsonText(v))
		case f != f || f < 0 || f > 1<<31:
			return fmt.Errorf("metadata %q = %s out of range", k, jsonText(v))
		}
		set(c, f)
		return nil
	}}
}

// ggufOnly is a key whose absent value or one of allowed is what cskv computes.
func ggufOnly(key string, allowed ...any) ggufKey {
	return ggufKey{key, func(_ *Config, k string, v any) error {
		if v == nil {
			return nil
		}
		fv, isNum := gguf.AsFloat(v)
		for _, a := range allowed {
			if fa, ok := a.(float64); ok && isNum && fa == fv || a == v {
				return nil
			}
		}
		return unimplemented(k, v, jsonText(allowed))
	}}
}

func ggufHarmless(key string) ggufKey {
	return ggufKey{key, func(*Config, string, any) error { return nil }}
}

// ggufScalingTypes maps rope.scaling.type to the scaling table's names.
var ggufScalingTypes = map[string]string{"none": "", "linear": "linear", "yarn": "yarn"}

var ggufKeys = []ggufKey{
	ggufNum("%s.embedding_length", true, 0, func(c *Config, v float64) { c.Hidden = int(v) }),
	ggufNum("%s.block_count", true, 0, func(c *Config, v float64) { c.Layers = int(v) }),
	ggufNum("%s.attention.head_count", true, 0, func(c *Config, v float64) { c.Heads = int(v) }),
	ggufNum("%s.attention.head_count_kv", false, -1, func(c *Config, v float64) { c.KVHeads = int(v) }),
	ggufNum("%s.feed_forward_length", true, 0, func(c *Config, v float64) { c.FFN = int(v) }),
	ggufNum("%s.context_length", false, 2048, func(c *Config, v float64) { c.ContextLength = int(v) }),
	ggufNum("%s.rope.freq_base", false, 10000, func(c *Config, v float64) { c.RopeBase = v }),
	ggufNum("%s.attention.layer_norm_rms_epsilon", false, 1e-5, func(c *Config, v float64) { c.RMSEps = v }),
	ggufNum("%s.attention.key_length", false, -1, func(c *Config, v float64) { c.HeadDim = int(v) }),
	ggufHarmless("%s.attention.value_length"), // checked against the head dim below
	ggufHarmless("%s.rope.dimension_count"),   // checked against the head dim below
	ggufHarmless("%s.vocab_size"),             // the embedding's rows are the vocabulary
	ggufHarmless("%s.tensor_data_layout"),     // the Q/K row layout is the architecture's
	ggufHarmless("%s.rope.scaling.finetuned"), // training history
	ggufOnly("%s.expert_count", 0.0),          // mixture of experts
	ggufOnly("%s.expert_used_count", 0.0),     // mixture of experts
	ggufOnly("%s.rope.scaling.attn_factor", 1.0),
	{"%s.rope.scaling.type", func(c *Config, k string, v any) error {
		if v == nil {
			return nil
		}
		t, ok := ggufScalingTypes[fmt.Sprint(v)]
		if _, isStr := v.(string); !ok || !isStr {
			return unimplemented(k, v, `"none", "linear" or "yarn"`)
		}
		c.RopeScaling.Type = t
		return nil
	}},
	ggufNum("%s.rope.scaling.factor", false, 0, func(c *Config, v float64) { c.RopeScaling.Factor = v }),
	ggufNum("%s.rope.scale_linear", false, 0, func(c *Config, v float64) {
		if v != 0 {
			c.RopeScaling.Type, c.RopeScaling.Factor = "linear", v
		}
	}),
	ggufNum("%s.rope.scaling.original_context_length", false, 0, func(c *Config, v float64) { c.RopeScaling.OriginalContext = int(v) }),
}

// ropeFreqsName is llama.cpp's tensor of per-pair angle divisors.
const ropeFreqsName = "rope_freqs.weight"

func openGGUF(path string) (*Model, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := modelFromGGUF(f, path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open model %s: %w", path, err)
	}
	return m, nil
}

func modelFromGGUF(f *gguf.File, path string) (*Model, error) {
	arch, ok := f.String("general.architecture")
	if !ok {
		return nil, fmt.Errorf("missing general.architecture")
	}
	fam, ok := families[arch]
	if !ok || fam.ggufNames == nil {
		return nil, fmt.Errorf("architecture %q: %w (supported in GGUF: %s)", arch, ErrUnsupported, strings.Join(familyNames(true), ", "))
	}
	c := Config{Arch: arch, QKVBias: fam.qkvBias, Activation: fam.activation}
	known := map[string]bool{}
	for _, k := range ggufKeys {
		key := fmt.Sprintf(k.key, arch)
		known[key] = true
		v, _ := f.Get(key)
		if err := k.apply(&c, key, v); err != nil {
			return nil, err
		}
	}
	for _, kv := range f.KV {
		if strings.HasPrefix(kv.Key, arch+".") && !known[kv.Key] {
			return nil, fmt.Errorf("metadata %q = %s is not understood for architecture %q: %w (cskv refuses settings it does not know)", kv.Key, jsonText(kv.Value), arch, ErrUnsupported)
		}
	}
	if c.RopeScaling.Type == "linear" && c.RopeScaling.Factor == 1 {
		c.RopeScaling = RopeScaling{}
	}
	if c.KVHeads < 0 {
		c.KVHeads = c.Heads
	}
	if c.Heads <= 0 || c.Hidden <= 0 {
		return nil, fmt.Errorf("metadata: %d heads, hidden %d", c.Heads, c.Hidden)
	}
	if c.HeadDim < 0 {
		c.HeadDim = c.Hidden / c.Heads
	}
	if rd, ok := f.Uint(fmt.Sprintf("%s.rope.dimension_count", arch)); ok && int(rd) != c.HeadDim {
		return nil, fmt.Errorf("partial rotary embedding (rope dim %d of head dim %d): %w", rd, c.HeadDim, ErrUnsupported)
	}
	if vl, ok := f.Uint(fmt.Sprintf("%s.attention.value_length", arch)); ok && int(vl) != c.HeadDim {
		return nil, fmt.Errorf("metadata %q = %d differs from the key length %d: %w", arch+".attention.value_length", vl, c.HeadDim, ErrUnsupported)
	}
	if _, ok := f.Tensor(ropeFreqsName); ok {
		if !fam.ropeFreqs {
			return nil, fmt.Errorf("tensor %q on architecture %q, which does not use it: %w", ropeFreqsName, arch, ErrUnsupported)
		}
		if c.RopeScaling.Type != "" {
			return nil, fmt.Errorf("tensor %q together with rope scaling %q: %w", ropeFreqsName, c.RopeScaling.Type, ErrUnsupported)
		}
		div, sh, err := f.ReadTensor(ropeFreqsName)
		if err != nil {
			return nil, err
		}
		if len(sh) != 1 || sh[0] != c.HeadDim/2 {
			return nil, fmt.Errorf("tensor %q has shape %v, want [%d] (head dim / 2)", ropeFreqsName, sh, c.HeadDim/2)
		}
		c.RopeScaling = RopeScaling{Type: "freqs", Divisors: div}
	}
	emb, ok := f.Tensor(ggufNames[Embed])
	if !ok {
		return nil, fmt.Errorf("missing tensor %q", ggufNames[Embed])
	}
	if sh := emb.Shape(); len(sh) == 2 {
		c.Vocab = sh[0]
	}
	_, hasOut := f.Tensor(ggufNames[Output])
	c.TiedOutput = !hasOut
	m := &Model{Config: c, Path: path, Format: "gguf", src: ggufSource{f}, names: fam.ggufNames, rope: fam.ggufRope}
	var err error
	if m.Digest, err = digestFiles(path); err != nil {
		return nil, err
	}
	m.keepAll = fileSize(path) < keepAllBytes
	if _, ok := f.String("tokenizer.ggml.model"); ok {
		tok, err := tokenizer.FromGGUF(f)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		m.Tokenizer = tok
	}
	return m, nil
}
