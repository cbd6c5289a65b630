package model

import (
	"fmt"
	"math"
	"slices"
)

// family is what cskv knows about one architecture: its tensors and their
// names, the parts of the block that differ from Llama, and the config keys
// it understands. Adding a family means adding a row to families.
type family struct {
	hfModelType string // config.json model_type
	hfClass     string // config.json architectures[0]
	layerRoles  []Role // the tensors of every block, as the files store them (biases: see qkvBias)
	qkvBias     bool   // q/k/v projections always carry biases (Qwen2)
	hfNames     map[Role]string
	ggufNames   map[Role]string // nil: no GGUF form is read
	ggufRope    ropeLayout      // Q/K row layout of this family's GGUF files
	ropeFreqs   bool            // GGUF rope_freqs.weight belongs to the architecture (llama)
	normOffset  float32         // RMSNorm weights are normOffset + w (Gemma-2: 1)
	embedScale  bool            // token embeddings × √hidden in the weights' dtype (Gemma-2)
	activation  string          // a key of activations
	tiedDefault bool            // tie_word_embeddings when config.json has no such key (Gemma2Config: true)
	// sliding tells which layers use the config's sliding_window when it
	// gives no layer_types; nil: the family has no sliding window.
	sliding func(l int) bool
	hfKeys  []cfgKey // config.json keys beyond commonHFKeys
}

var (
	llamaRoles  = []Role{AttnNorm, Wq, Wk, Wv, Wo, FFNNorm, Wgate, Wup, Wdown}
	qwen3Roles  = []Role{AttnNorm, Wq, Wk, Wv, Wo, QNorm, KNorm, FFNNorm, Wgate, Wup, Wdown}
	phi3Roles   = []Role{AttnNorm, Wqkv, Wo, FFNNorm, WgateUp, Wdown}
	gemma2Roles = []Role{AttnNorm, Wq, Wk, Wv, Wo, PostAttnNorm, FFNNorm, Wgate, Wup, Wdown, PostFFNNorm}
)

func everyLayer(int) bool   { return true }
func evenLayers(l int) bool { return l%2 == 0 }

// families is the architecture table, keyed by cskv's architecture name
// (GGUF general.architecture and, through hfModelType, config.json model_type).
var families = map[string]family{
	"llama": {hfModelType: "llama", hfClass: "LlamaForCausalLM", layerRoles: llamaRoles, hfNames: hfNames,
		ggufNames: ggufNames, ggufRope: ropeAdjacent, ropeFreqs: true, activation: "silu", hfKeys: llamaKeys},
	"mistral": {hfModelType: "mistral", hfClass: "MistralForCausalLM", layerRoles: llamaRoles, hfNames: hfNames,
		ggufNames: ggufNames, ggufRope: ropeAdjacent, activation: "silu", sliding: everyLayer, hfKeys: mistralKeys},
	"qwen2": {hfModelType: "qwen2", hfClass: "Qwen2ForCausalLM", layerRoles: llamaRoles, qkvBias: true, hfNames: hfNames,
		ggufNames: ggufNames, ggufRope: ropeHalves, activation: "silu", hfKeys: qwenKeys},
	"qwen3": {hfModelType: "qwen3", hfClass: "Qwen3ForCausalLM", layerRoles: qwen3Roles, hfNames: hfNames,
		ggufNames: ggufNames, ggufRope: ropeHalves, activation: "silu", hfKeys: qwen3Keys},
	"phi3": {hfModelType: "phi3", hfClass: "Phi3ForCausalLM", layerRoles: phi3Roles, hfNames: hfNames,
		activation: "silu", sliding: everyLayer, hfKeys: phi3Keys},
	"gemma2": {hfModelType: "gemma2", hfClass: "Gemma2ForCausalLM", layerRoles: gemma2Roles, hfNames: hfGemma2Names,
		normOffset: 1, embedScale: true, tiedDefault: true, activation: "gelu_tanh", sliding: evenLayers, hfKeys: gemma2Keys},
}

// familyByModelType finds the family of a config.json model_type.
func familyByModelType(mt string) (string, bool) {
	for name, f := range families {
		if f.hfModelType == mt {
			return name, true
		}
	}
	return "", false
}

// familyNames lists the table's architecture names, sorted (for messages).
func familyNames(gguf bool) []string {
	var out []string
	for name, f := range families {
		if !gguf || f.ggufNames != nil {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// roles lists the tensors of every block of a model of this family with
// configuration c: the family's, and the q/k/v biases when c has them.
func (f family) roles(c Config) []Role {
	if !c.QKVBias {
		return f.layerRoles
	}
	return append(slices.Clone(f.layerRoles), Bq, Bk, Bv)
}

// Features lists, for `cskv inspect`, what the model computes beyond a plain
// Llama block: the rotary scaling in effect and the family's departures.
func (m *Model) Features() [][2]string {
	c := m.Config
	out := [][2]string{{"rope scaling", c.RopeScaling.Describe()}}
	if r, err := c.Rope(); err == nil && r.AttentionFactor != 1 {
		out = append(out, [2]string{"rope attention factor", fmt.Sprintf("%.10g (cos and sin; logits × its square)", r.AttentionFactor)})
	}
	act := c.Activation
	if act == "" {
		act = "silu"
	}
	out = append(out, [2]string{"mlp activation", act})
	if slices.Contains(m.fam.layerRoles, QNorm) {
		out = append(out, [2]string{"q/k norm", "per-head RMSNorm of q and k before RoPE"})
	}
	if slices.Contains(m.fam.layerRoles, PostAttnNorm) {
		out = append(out, [2]string{"block norms", "input, post-attention, pre-MLP, post-MLP"})
	}
	if m.fam.normOffset != 0 {
		out = append(out, [2]string{"rmsnorm weight", fmt.Sprintf("%g + w (added at load)", m.fam.normOffset)})
	}
	if slices.Contains(m.fam.layerRoles, Wqkv) {
		out = append(out, [2]string{"fused tensors", "qkv_proj and gate_up_proj, split at load"})
	}
	if c.EmbedScale != 0 {
		out = append(out, [2]string{"embedding scale", fmt.Sprintf("%g", c.EmbedScale)})
	}
	if c.QueryScalar != 0 {
		out = append(out, [2]string{"attention scale", fmt.Sprintf("query_pre_attn_scalar %g → %.6g", c.QueryScalar, 1/math.Sqrt(c.QueryScalar))})
	}
	if c.AttnSoftCap != 0 {
		out = append(out, [2]string{"attention soft-cap", fmt.Sprintf("%g", c.AttnSoftCap)})
	}
	if c.FinalSoftCap != 0 {
		out = append(out, [2]string{"final logit soft-cap", fmt.Sprintf("%g", c.FinalSoftCap)})
	}
	if c.Windows != nil {
		out = append(out, [2]string{"sliding window", fmt.Sprintf("per layer %v (0 = global)", c.Windows)})
	}
	if len(m.Skipped) > 0 {
		out = append(out, [2]string{"skipped tensors", fmt.Sprintf("%v (they do not change the network)", m.Skipped)})
	}
	return out
}
