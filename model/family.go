package model

import "slices"

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
		normOffset: 1, embedScale: true, activation: "gelu_tanh", sliding: evenLayers, hfKeys: gemma2Keys},
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
