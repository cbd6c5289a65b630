package model

// Role is a canonical tensor of the network.
type Role int

// The canonical tensors. Per-layer roles are formatted with the layer index.
const (
	Embed Role = iota
	OutputNorm
	Output
	AttnNorm
	Wq
	Wk
	Wv
	Wo
	Bq
	Bk
	Bv
	FFNNorm
	Wgate
	Wup
	Wdown
)

// perLayer tells which roles exist once per block.
var perLayer = map[Role]bool{AttnNorm: true, Wq: true, Wk: true, Wv: true, Wo: true, Bq: true, Bk: true, Bv: true, FFNNorm: true, Wgate: true, Wup: true, Wdown: true}

// ggufNames maps roles to GGUF tensor names (llama.cpp convention).
var ggufNames = map[Role]string{
	Embed: "token_embd.weight", OutputNorm: "output_norm.weight", Output: "output.weight",
	AttnNorm: "blk.%d.attn_norm.weight",
	Wq:       "blk.%d.attn_q.weight", Wk: "blk.%d.attn_k.weight", Wv: "blk.%d.attn_v.weight", Wo: "blk.%d.attn_output.weight",
	Bq: "blk.%d.attn_q.bias", Bk: "blk.%d.attn_k.bias", Bv: "blk.%d.attn_v.bias",
	FFNNorm: "blk.%d.ffn_norm.weight",
	Wgate:   "blk.%d.ffn_gate.weight", Wup: "blk.%d.ffn_up.weight", Wdown: "blk.%d.ffn_down.weight",
}

// hfNames maps roles to Hugging Face transformers tensor names.
var hfNames = map[Role]string{
	Embed: "model.embed_tokens.weight", OutputNorm: "model.norm.weight", Output: "lm_head.weight",
	AttnNorm: "model.layers.%d.input_layernorm.weight",
	Wq:       "model.layers.%d.self_attn.q_proj.weight", Wk: "model.layers.%d.self_attn.k_proj.weight",
	Wv: "model.layers.%d.self_attn.v_proj.weight", Wo: "model.layers.%d.self_attn.o_proj.weight",
	Bq: "model.layers.%d.self_attn.q_proj.bias", Bk: "model.layers.%d.self_attn.k_proj.bias", Bv: "model.layers.%d.self_attn.v_proj.bias",
	FFNNorm: "model.layers.%d.post_attention_layernorm.weight",
	Wgate:   "model.layers.%d.mlp.gate_proj.weight", Wup: "model.layers.%d.mlp.up_proj.weight", Wdown: "model.layers.%d.mlp.down_proj.weight",
}

// ropeLayout names how a file stores the rows of Q and K within each head.
type ropeLayout int

const (
	ropeHalves   ropeLayout = iota // Hugging Face rotate-half: pairs (i, i+Dh/2)
	ropeAdjacent                   // Meta original: pairs (2i, 2i+1)
)

// archInfo is what the loaders need to know about one architecture.
type archInfo struct {
	qkvBias    bool       // q/k/v projections carry biases
	ggufRope   ropeLayout // Q/K row layout in GGUF files of this architecture
	hfModelTyp string     // config.json model_type
	hfClass    string     // config.json architectures[0]
}

// archs is the table of supported architectures. Adding one means adding a row.
var archs = map[string]archInfo{
	"llama":   {qkvBias: false, ggufRope: ropeAdjacent, hfModelTyp: "llama", hfClass: "LlamaForCausalLM"},
	"mistral": {qkvBias: false, ggufRope: ropeAdjacent, hfModelTyp: "mistral", hfClass: "MistralForCausalLM"},
	"qwen2":   {qkvBias: true, ggufRope: ropeHalves, hfModelTyp: "qwen2", hfClass: "Qwen2ForCausalLM"},
}

// permuteRows reorders the rows of a (heads·dh, cols) matrix (or a bias, cols =
// 1) within each head: out row j·dh/2+i of a head comes from row 2i+j when
// toHalves, and the reverse otherwise.
func permuteRows(w []float32, heads, dh, cols int, toHalves bool) []float32 {
	out := make([]float32, len(w))
	half := dh / 2
	for h := 0; h < heads; h++ {
		base := h * dh
		for i := 0; i < half; i++ {
			for j := 0; j < 2; j++ {
				adj := base + 2*i + j
				hv := base + j*half + i
				src, dst := adj, hv
				if !toHalves {
					src, dst = hv, adj
				}
				copy(out[dst*cols:(dst+1)*cols], w[src*cols:(src+1)*cols])
			}
		}
	}
	return out
}

// RopeToHalves converts Meta adjacent-pair rows to the rotate-half layout
// (at load, and when importing factors written in the Meta layout).
func RopeToHalves(w []float32, heads, dh, cols int) []float32 {
	return permuteRows(w, heads, dh, cols, true)
}

// RopeToAdjacent converts rotate-half rows back to Meta's adjacent-pair layout
// (used when writing GGUF-convention tensors).
func RopeToAdjacent(w []float32, heads, dh, cols int) []float32 {
	return permuteRows(w, heads, dh, cols, false)
}
