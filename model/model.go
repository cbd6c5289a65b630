package model

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/cskv/cskv/linalg"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/cskv/cskv/model/dtype"
	"github.com/cskv/cskv/model/tokenizer"
)

// Block holds one decoder layer's frozen weights in canonical layout.
type Block struct {
	AttnNorm []float32 // (D)
	Wq       []float32 // (H·Dh, D), rows in rotate-half layout
	Wk       []float32 // (KV, D), rows in rotate-half layout
	Wv       []float32 // (KV, D)
	Wo       []float32 // (D, H·Dh)
	Bq       []float32 // (H·Dh) or nil
	Bk       []float32 // (KV) or nil
	Bv       []float32 // (KV) or nil
	FFNNorm  []float32 // (D) the pre-MLP norm
	Wgate    []float32 // (F, D)
	Wup      []float32 // (F, D)
	Wdown    []float32 // (D, F)

	PostAttnNorm []float32 // (D) norm of the attention output before the residual add, or nil (Gemma-2)
	PostFFNNorm  []float32 // (D) norm of the MLP output before the residual add, or nil (Gemma-2)

	// Attn is this layer's attention rule: RoPE frequencies and attention
	// factor, scale, soft-cap, sliding window and the q/k norm weights.
	Attn Attention

	work *workspace // Forward's temporaries while frozen (Freeze), else nil
}

// Freeze declares the block's projection weights unchanged until the
// returned thaw (linalg.Freeze), for a caller that runs the block over many
// chunks of tokens (train's advance): in bf16 the weights are rounded once,
// holding a bf16 copy (2 bytes per weight) meanwhile, and Forward keeps its
// temporaries for the next call until the thaw.
func (b *Block) Freeze() (thaw func()) {
	ws := [][]float32{b.Wq, b.Wk, b.Wv, b.Wo, b.Wgate, b.Wup, b.Wdown}
	for _, w := range ws {
		if len(w) > 0 {
			linalg.Freeze(w)
		}
	}
	b.work = &workspace{}
	return func() {
		b.work = nil
		for _, w := range ws {
			if len(w) > 0 {
				linalg.Thaw(w)
			}
		}
	}
}

// Norm weights are stored effective (the family's offset, Gemma-2's 1 + w,
// is added at load), so every RMSNorm in cskv is x/rms(x)·w.

// Model is an opened frozen model. Blocks are read from the file on demand
// (and kept when the model is small), so a model larger than memory can be
// walked layer by layer.
type Model struct {
	Config    Config
	Path      string              // file or directory opened
	Format    string              // "gguf" or "safetensors"
	Digest    string              // sha256 of the weight file(s), hex
	Tokenizer tokenizer.Tokenizer // nil when the source has none

	Embed      []float32 // (V, D)
	OutputNorm []float32 // (D)
	Output     []float32 // (V, D); aliases Embed when tied

	// Skipped lists tensors of the file the loader does not use because they
	// do not change the network (rotary_emb.inv_freq, a tied lm_head).
	Skipped []string

	src      source
	fam      family
	names    map[Role]string // tensor names in the file
	rope     ropeLayout      // layout of Q/K rows in the file
	mu       sync.Mutex
	blocks   []*Block // cached blocks (nil entries when not loaded)
	keepAll  bool     // cache every block once read
	tensorsN []TensorEntry
}

// TensorEntry describes one tensor of the source file, for `cskv inspect`.
type TensorEntry struct {
	Name  string
	Shape []int
	Type  string
}

// source is one file format's tensor reader.
type source interface {
	read(name string) ([]float32, []int, error) // row-major float32 and shape
	has(name string) bool
	list() []TensorEntry
	names() map[Role]string
	close() error
}

// keepAllBytes is the size below which every block is cached after loading.
const keepAllBytes = 2 << 30

// Open opens a GGUF file or a Hugging Face model directory (config.json plus
// model.safetensors or a sharded index), sniffing which it is.
func Open(path string) (*Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open model: %w", err)
	}
	var m *Model
	if st.IsDir() {
		m, err = openHF(path)
	} else {
		magic := make([]byte, 4)
		f, ferr := os.Open(path)
		if ferr != nil {
			return nil, fmt.Errorf("open model: %w", ferr)
		}
		_, rerr := io.ReadFull(f, magic)
		if cerr := f.Close(); cerr != nil && rerr == nil {
			rerr = cerr
		}
		switch {
		case rerr != nil:
			return nil, fmt.Errorf("open model %s: too short to be a model file: %w", path, rerr)
		case string(magic) == "GGUF":
			m, err = openGGUF(path)
		case filepath.Ext(path) == ".safetensors":
			m, err = openHF(filepath.Dir(path))
		default:
			return nil, fmt.Errorf("open model %s: not a GGUF file (magic %q) nor a Hugging Face directory", path, magic)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := m.finish(); err != nil {
		m.Close()
		return nil, fmt.Errorf("open model %s: %w", path, err)
	}
	return m, nil
}

// finish loads the global tensors, checks every expected tensor exists and
// that the file holds no tensor the loader would leave unused.
func (m *Model) finish() error {
	if err := m.Config.Validate(); err != nil {
		return err
	}
	c := m.Config
	fam, ok := families[c.Arch]
	if !ok {
		return fmt.Errorf("architecture %q: %w", c.Arch, ErrUnsupported)
	}
	m.fam = fam
	if m.names == nil {
		m.names = m.src.names()
	}
	names := m.names
	used := map[string]bool{}
	for l := 0; l < c.Layers; l++ {
		for _, r := range fam.roles(c) {
			n := fmt.Sprintf(names[r], l)
			if !m.src.has(n) {
				return fmt.Errorf("missing tensor %q", n)
			}
			used[n] = true
		}
	}
	var err error
	if m.Embed, err = m.load(names[Embed], c.Vocab, c.Hidden); err != nil {
		return err
	}
	if m.OutputNorm, err = m.load(names[OutputNorm], c.Hidden); err != nil {
		return err
	}
	addOffset(m.OutputNorm, fam.normOffset)
	used[names[Embed]], used[names[OutputNorm]] = true, true
	if !c.TiedOutput && !m.src.has(names[Output]) && m.Format == "safetensors" {
		return fmt.Errorf("missing tensor %q (tie_word_embeddings is false)", names[Output])
	}
	if m.src.has(names[Output]) && !c.TiedOutput {
		if m.Output, err = m.load(names[Output], c.Vocab, c.Hidden); err != nil {
			return err
		}
		used[names[Output]] = true
	} else {
		m.Output = m.Embed
		m.Config.TiedOutput = true
	}
	if fam.embedScale {
		m.Config.EmbedScale = roundAs(m.tensorType(names[Embed]), float32(math.Sqrt(float64(c.Hidden))))
	}
	for _, t := range m.src.list() {
		switch {
		case used[t.Name] || m.Config.RopeScaling.Type == "freqs" && t.Name == ropeFreqsName:
		case harmlessTensor(t.Name, names, m.Config.TiedOutput):
			m.Skipped = append(m.Skipped, t.Name)
		default:
			return fmt.Errorf("tensor %q is not used by the %s loader: %w (cskv refuses to ignore weights)", t.Name, c.Arch, ErrUnsupported)
		}
	}
	m.blocks = make([]*Block, c.Layers)
	return nil
}

// harmlessTensor tells whether an unused tensor leaves the network unchanged:
// precomputed rotary frequencies (recomputed from the config) or an output
// matrix the config ties to the embedding.
func harmlessTensor(name string, names map[Role]string, tied bool) bool {
	return strings.HasSuffix(name, "rotary_emb.inv_freq") || tied && name == names[Output]
}

// tensorType is the stored element type of a tensor ("F32", "BF16", …).
func (m *Model) tensorType(name string) string {
	for _, t := range m.src.list() {
		if t.Name == name {
			return t.Type
		}
	}
	return ""
}

// roundAs rounds v as a tensor of the stored type typ rounds it.
func roundAs(typ string, v float32) float32 {
	switch typ {
	case "BF16":
		return dtype.BF16ToF32(dtype.F32ToBF16(v))
	case "F16":
		return dtype.RoundF16(v)
	}
	return v
}

func addOffset(w []float32, off float32) {
	if off != 0 {
		for i := range w {
			w[i] += off
		}
	}
}

// load reads a tensor and checks its shape.
func (m *Model) load(name string, shape ...int) ([]float32, error) {
	data, got, err := m.src.read(name)
	if err != nil {
		return nil, err
	}
	if !sameShape(got, shape) {
		return nil, fmt.Errorf("tensor %q has shape %v, want %v", name, got, shape)
	}
	for i, v := range data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("tensor %q: non-finite value %g at index %d", name, v, i)
		}
	}
	return data, nil
}

func sameShape(a, b []int) bool {
	// a vector may be stored as (n) or (1, n)
	trim := func(s []int) []int {
		for len(s) > 1 && s[0] == 1 {
			s = s[1:]
		}
		return s
	}
	a, b = trim(a), trim(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Block returns layer l's weights, reading them from the file if needed.
func (m *Model) Block(l int) (*Block, error) {
	c := m.Config
	if l < 0 || l >= c.Layers {
		return nil, fmt.Errorf("layer %d out of range [0, %d)", l, c.Layers)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if b := m.blocks[l]; b != nil {
		return b, nil
	}
	b := &Block{}
	var err error
	if b.Attn, err = c.Attention(l); err != nil {
		return nil, fmt.Errorf("layer %d: %w", l, err)
	}
	for _, r := range m.fam.roles(c) {
		info := roleInfos[r]
		w, err := m.load(fmt.Sprintf(m.names[r], l), info.shape(c)...)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", l, err)
		}
		if info.norm {
			addOffset(w, m.fam.normOffset)
		}
		if info.split != nil {
			info.split(b, c, w)
		} else {
			*info.dst(b) = w
		}
	}
	if m.rope == ropeAdjacent {
		b.Wq = RopeToHalves(b.Wq, c.Heads, c.HeadDim, c.Hidden)
		b.Wk = RopeToHalves(b.Wk, c.KVHeads, c.HeadDim, c.Hidden)
		if b.Bq != nil {
			b.Bq = RopeToHalves(b.Bq, c.Heads, c.HeadDim, 1)
			b.Bk = RopeToHalves(b.Bk, c.KVHeads, c.HeadDim, 1)
		}
		for _, w := range []*[]float32{&b.Attn.QNorm, &b.Attn.KNorm} {
			if *w != nil {
				*w = RopeToHalves(*w, 1, c.HeadDim, 1)
			}
		}
	}
	if m.keepAll {
		m.blocks[l] = b
	}
	return b, nil
}

// Tensors lists the source file's tensors (name, shape, type).
func (m *Model) Tensors() []TensorEntry { return m.src.list() }

// RopeLayoutName says how the file stored Q/K rows.
func (m *Model) RopeLayoutName() string {
	if m.rope == ropeAdjacent {
		return "adjacent pairs (Meta layout; converted to rotate-half at load)"
	}
	return "rotate-half (Hugging Face layout)"
}

// Close releases the underlying file(s).
func (m *Model) Close() error {
	if m.src == nil {
		return nil
	}
	return m.src.close()
}

// digestFiles is the sha256 of the named files' bytes, in order.
func digestFiles(paths ...string) (string, error) {
	h := sha256.New()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", fmt.Errorf("digest %s: %w", p, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// sortedEntries sorts tensor entries by name.
func sortedEntries(e []TensorEntry) []TensorEntry {
	sort.Slice(e, func(i, j int) bool { return e[i].Name < e[j].Name })
	return e
}

var errNoTokenizer = errors.New("model has no tokenizer")

// Encode tokenizes text with the model's tokenizer (no BOS).
func (m *Model) Encode(text string) ([]int, error) {
	if m.Tokenizer == nil {
		return nil, fmt.Errorf("%s: %w (give token ids instead of text)", m.Path, errNoTokenizer)
	}
	return m.Tokenizer.Encode(text)
}
