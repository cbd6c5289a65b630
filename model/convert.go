package model

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cskv/cskv/atomicfile"
	"github.com/cskv/cskv/model/safetensors"
	"github.com/cskv/cskv/model/tokenizer"
)

// hfConfig is the config.json written by ConvertHF.
type hfConfig struct {
	Architectures     []string `json:"architectures"`
	ModelType         string   `json:"model_type"`
	HiddenSize        int      `json:"hidden_size"`
	IntermediateSize  int      `json:"intermediate_size"`
	NumHiddenLayers   int      `json:"num_hidden_layers"`
	NumAttentionHeads int      `json:"num_attention_heads"`
	NumKeyValueHeads  int      `json:"num_key_value_heads"`
	HeadDim           int      `json:"head_dim"`
	VocabSize         int      `json:"vocab_size"`
	MaxPositionEmb    int      `json:"max_position_embeddings"`
	RMSNormEps        float64  `json:"rms_norm_eps"`
	RopeTheta         float64  `json:"rope_theta"`
	TieWordEmbeddings bool     `json:"tie_word_embeddings"`
	HiddenAct         string   `json:"hidden_act"`
	TorchDType        string   `json:"torch_dtype"`
	BOSTokenID        *int     `json:"bos_token_id,omitempty"`
	EOSTokenID        *int     `json:"eos_token_id,omitempty"`
	AttentionBias     bool     `json:"attention_bias,omitempty"` // never true: biased llama is refused
	RopeScaling       any      `json:"rope_scaling"`
	// SlidingWindow is written for families that have one, as null when the
	// model has none (a GGUF carries no window; the HF default would add one).
	SlidingWindow json.RawMessage `json:"sliding_window,omitempty"`
}

// ConvertHF writes the model as a Hugging Face directory: config.json,
// model.safetensors (HF tensor names, Q/K rows in the rotate-half layout,
// F32) and, when the model has a SentencePiece tokenizer, tokenizer.json and
// tokenizer_config.json. The directory appears atomically: it is built under
// a temporary name beside dir and renamed; dir must not exist.
func (m *Model) ConvertHF(dir string) (err error) {
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("convert: %s already exists", dir)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	c := m.Config
	fam := families[c.Arch]
	if fam.ggufNames == nil {
		return fmt.Errorf("convert: architecture %q has no GGUF form: %w", c.Arch, ErrUnsupported)
	}
	scaling, err := c.RopeScaling.hfJSON(c.RopeBase, c.HeadDim)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	cfg := hfConfig{
		Architectures: []string{fam.hfClass}, ModelType: fam.hfModelType,
		HiddenSize: c.Hidden, IntermediateSize: c.FFN, NumHiddenLayers: c.Layers,
		NumAttentionHeads: c.Heads, NumKeyValueHeads: c.KVHeads, HeadDim: c.HeadDim,
		VocabSize: c.Vocab, MaxPositionEmb: c.ContextLength, RMSNormEps: c.RMSEps,
		RopeTheta: c.RopeBase, TieWordEmbeddings: c.TiedOutput, HiddenAct: "silu",
		TorchDType: "float32", RopeScaling: scaling,
	}
	if fam.sliding != nil {
		cfg.SlidingWindow = json.RawMessage("null")
		if c.SlidingWindow > 0 {
			if !slices.Equal(c.Windows, windowsOf(fam, c.Layers, c.SlidingWindow)) {
				return fmt.Errorf("convert: per-layer windows %v are not the %s pattern: %w", c.Windows, c.Arch, ErrUnsupported)
			}
			cfg.SlidingWindow = json.RawMessage(fmt.Sprint(c.SlidingWindow))
		}
	}
	if m.Tokenizer != nil {
		if b := m.Tokenizer.BOS(); b >= 0 {
			cfg.BOSTokenID = &b
		}
		if e := m.Tokenizer.EOS(); e >= 0 {
			cfg.EOSTokenID = &e
		}
	}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteSync(filepath.Join(tmp, "config.json"), append(raw, '\n')); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	tensors := []safetensors.Tensor{
		{Name: hfNames[Embed], Shape: []int{c.Vocab, c.Hidden}, DType: safetensors.F32, Data: m.Embed},
		{Name: hfNames[OutputNorm], Shape: []int{c.Hidden}, DType: safetensors.F32, Data: m.OutputNorm},
	}
	if !c.TiedOutput {
		tensors = append(tensors, safetensors.Tensor{Name: hfNames[Output], Shape: []int{c.Vocab, c.Hidden}, DType: safetensors.F32, Data: m.Output})
	}
	for l := 0; l < c.Layers; l++ {
		b, err := m.Block(l)
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		for _, r := range fam.roles(c) {
			info := roleInfos[r]
			if info.dst == nil {
				return fmt.Errorf("convert: fused tensor %q: %w", fam.hfNames[r], ErrUnsupported)
			}
			data := *info.dst(b)
			if info.norm && fam.normOffset != 0 { // files store w, memory 1 + w
				data = append([]float32(nil), data...)
				addOffset(data, -fam.normOffset)
			}
			tensors = append(tensors, safetensors.Tensor{Name: fmt.Sprintf(fam.hfNames[r], l), Shape: info.shape(c), DType: safetensors.F32, Data: data})
		}
	}
	meta := map[string]string{"format": "pt", "converted_from": filepath.Base(m.Path), "source_digest": m.Digest}
	if err := safetensors.Write(filepath.Join(tmp, "model.safetensors"), tensors, meta); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if spm, ok := m.Tokenizer.(*tokenizer.SPM); ok {
		tj, err := tokenizer.ToHFJSON(spm)
		if err != nil {
			return fmt.Errorf("convert: tokenizer: %w", err)
		}
		if err := atomicfile.WriteSync(filepath.Join(tmp, "tokenizer.json"), tj); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		tc, err := tokenizer.HFConfigJSON(spm)
		if err != nil {
			return fmt.Errorf("convert: tokenizer config: %w", err)
		}
		if err := atomicfile.WriteSync(filepath.Join(tmp, "tokenizer_config.json"), tc); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp made it private
		return fmt.Errorf("convert: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	return nil
}
