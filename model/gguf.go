package model

import (
	"fmt"

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

// ggufKey describes one architecture hyper-parameter in GGUF metadata
// ("%s" is the architecture name).
type ggufKey struct {
	key      string
	required bool
	def      float64
	set      func(c *Config, v float64)
}

var ggufKeys = []ggufKey{
	{"%s.embedding_length", true, 0, func(c *Config, v float64) { c.Hidden = int(v) }},
	{"%s.block_count", true, 0, func(c *Config, v float64) { c.Layers = int(v) }},
	{"%s.attention.head_count", true, 0, func(c *Config, v float64) { c.Heads = int(v) }},
	{"%s.attention.head_count_kv", false, -1, func(c *Config, v float64) { c.KVHeads = int(v) }},
	{"%s.feed_forward_length", true, 0, func(c *Config, v float64) { c.FFN = int(v) }},
	{"%s.context_length", false, 2048, func(c *Config, v float64) { c.ContextLength = int(v) }},
	{"%s.rope.freq_base", false, 10000, func(c *Config, v float64) { c.RopeBase = v }},
	{"%s.attention.layer_norm_rms_epsilon", false, 1e-5, func(c *Config, v float64) { c.RMSEps = v }},
	{"%s.attention.key_length", false, -1, func(c *Config, v float64) { c.HeadDim = int(v) }},
}

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
	info, ok := archs[arch]
	if !ok {
		return nil, fmt.Errorf("architecture %q: %w (supported: llama, mistral, qwen2)", arch, ErrUnsupported)
	}
	c := Config{Arch: arch, QKVBias: info.qkvBias}
	for _, k := range ggufKeys {
		key := fmt.Sprintf(k.key, arch)
		v, ok := f.Float(key)
		if !ok {
			if k.required {
				return nil, fmt.Errorf("missing metadata %q", key)
			}
			v = k.def
		}
		if v != v || v > 1<<31 {
			return nil, fmt.Errorf("metadata %q = %g out of range", key, v)
		}
		k.set(&c, v)
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
	emb, ok := f.Tensor(ggufNames[Embed])
	if !ok {
		return nil, fmt.Errorf("missing tensor %q", ggufNames[Embed])
	}
	if sh := emb.Shape(); len(sh) == 2 {
		c.Vocab = sh[0]
	}
	_, hasOut := f.Tensor(ggufNames[Output])
	c.TiedOutput = !hasOut
	m := &Model{Config: c, Path: path, Format: "gguf", src: ggufSource{f}, rope: info.ggufRope}
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
