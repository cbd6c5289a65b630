package model

import "maps"

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
	QNorm        // per-head RMSNorm of the queries (Qwen3)
	KNorm        // per-head RMSNorm of the keys (Qwen3)
	PostAttnNorm // norm of the attention output before the residual add (Gemma-2)
	PostFFNNorm  // norm of the MLP output before the residual add (Gemma-2)
	Wqkv         // fused q, k, v rows (Phi-3); split into Wq, Wk, Wv at load
	WgateUp      // fused gate, up rows (Phi-3); split into Wgate, Wup at load
)

// roleInfo is how one per-layer role is stored in a Block: its shape in the
// file, where it goes, and whether it is an RMSNorm weight (which receives
// the family's norm offset at load).
type roleInfo struct {
	shape func(c Config) []int
	dst   func(b *Block) *[]float32 // nil for fused roles
	split func(b *Block, c Config, w []float32)
	norm  bool
}

var roleInfos = map[Role]roleInfo{
	AttnNorm:     {shape: func(c Config) []int { return []int{c.Hidden} }, dst: func(b *Block) *[]float32 { return &b.AttnNorm }, norm: true},
	Wq:           {shape: func(c Config) []int { return []int{c.QDim(), c.Hidden} }, dst: func(b *Block) *[]float32 { return &b.Wq }},
	Wk:           {shape: func(c Config) []int { return []int{c.KVDim(), c.Hidden} }, dst: func(b *Block) *[]float32 { return &b.Wk }},
	Wv:           {shape: func(c Config) []int { return []int{c.KVDim(), c.Hidden} }, dst: func(b *Block) *[]float32 { return &b.Wv }},
	Wo:           {shape: func(c Config) []int { return []int{c.Hidden, c.QDim()} }, dst: func(b *Block) *[]float32 { return &b.Wo }},
	Bq:           {shape: func(c Config) []int { return []int{c.QDim()} }, dst: func(b *Block) *[]float32 { return &b.Bq }},
	Bk:           {shape: func(c Config) []int { return []int{c.KVDim()} }, dst: func(b *Block) *[]float32 { return &b.Bk }},
	Bv:           {shape: func(c Config) []int { return []int{c.KVDim()} }, dst: func(b *Block) *[]float32 { return &b.Bv }},
	FFNNorm:      {shape: func(c Config) []int { return []int{c.Hidden} }, dst: func(b *Block) *[]float32 { return &b.FFNNorm }, norm: true},
	Wgate:        {shape: func(c Config) []int { return []int{c.FFN, c.Hidden} }, dst: func(b *Block) *[]float32 { return &b.Wgate }},
	Wup:          {shape: func(c Config) []int { return []int{c.FFN, c.Hidden} }, dst: func(b *Block) *[]float32 { return &b.Wup }},
	Wdown:        {shape: func(c Config) []int { return []int{c.Hidden, c.FFN} }, dst: func(b *Block) *[]float32 { return &b.Wdown }},
	QNorm:        {shape: func(c Config) []int { return []int{c.HeadDim} }, dst: func(b *Block) *[]float32 { return &b.Attn.QNorm }, norm: true},
	KNorm:        {shape: func(c Config) []int { return []int{c.HeadDim} }, dst: func(b *Block) *[]float32 { return &b.Attn.KNorm }, norm: true},
	PostAttnNorm: {shape: func(c Config) []int { return []int{c.Hidden} }, dst: func(b *Block) *[]float32 { return &b.PostAttnNorm }, norm: true},
	PostFFNNorm:  {shape: func(c Config) []int { return []int{c.Hidden} }, dst: func(b *Block) *[]float32 { return &b.PostFFNNorm }, norm: true},
	Wqkv: {shape: func(c Config) []int { return []int{c.QDim() + 2*c.KVDim(), c.Hidden} }, split: func(b *Block, c Config, w []float32) {
		q, kv := c.QDim()*c.Hidden, c.KVDim()*c.Hidden
		b.Wq, b.Wk, b.Wv = w[:q:q], w[q:q+kv:q+kv], w[q+kv:]
	}},
	WgateUp: {shape: func(c Config) []int { return []int{2 * c.FFN, c.Hidden} }, split: func(b *Block, c Config, w []float32) {
		n := c.FFN * c.Hidden
		b.Wgate, b.Wup = w[:n:n], w[n:]
	}},
}

// ggufNames maps roles to GGUF tensor names (llama.cpp convention).
var ggufNames = map[Role]string{
	Embed: "token_embd.weight", OutputNorm: "output_norm.weight", Output: "output.weight",
	AttnNorm: "blk.%d.attn_norm.weight",
	Wq:       "blk.%d.attn_q.weight", Wk: "blk.%d.attn_k.weight", Wv: "blk.%d.attn_v.weight", Wo: "blk.%d.attn_output.weight",
	Bq: "blk.%d.attn_q.bias", Bk: "blk.%d.attn_k.bias", Bv: "blk.%d.attn_v.bias",
	FFNNorm: "blk.%d.ffn_norm.weight",
	Wgate:   "blk.%d.ffn_gate.weight", Wup: "blk.%d.ffn_up.weight", Wdown: "blk.%d.ffn_down.weight",
	QNorm: "blk.%d.attn_q_norm.weight", KNorm: "blk.%d.attn_k_norm.weight",
}

// hfNames maps roles to Hugging Face transformers tensor names (Llama's; the
// families that differ override entries, see families).
var hfNames = map[Role]string{
	Embed: "model.embed_tokens.weight", OutputNorm: "model.norm.weight", Output: "lm_head.weight",
	AttnNorm: "model.layers.%d.input_layernorm.weight",
	Wq:       "model.layers.%d.self_attn.q_proj.weight", Wk: "model.layers.%d.self_attn.k_proj.weight",
	Wv: "model.layers.%d.self_attn.v_proj.weight", Wo: "model.layers.%d.self_attn.o_proj.weight",
	Bq: "model.layers.%d.self_attn.q_proj.bias", Bk: "model.layers.%d.self_attn.k_proj.bias", Bv: "model.layers.%d.self_attn.v_proj.bias",
	FFNNorm: "model.layers.%d.post_attention_layernorm.weight",
	Wgate:   "model.layers.%d.mlp.gate_proj.weight", Wup: "model.layers.%d.mlp.up_proj.weight", Wdown: "model.layers.%d.mlp.down_proj.weight",
	QNorm: "model.layers.%d.self_attn.q_norm.weight", KNorm: "model.layers.%d.self_attn.k_norm.weight",
	Wqkv: "model.layers.%d.self_attn.qkv_proj.weight", WgateUp: "model.layers.%d.mlp.gate_up_proj.weight",
}

// hfGemma2Names: Gemma-2 calls the attention-output norm
// post_attention_layernorm and the pre-MLP norm pre_feedforward_layernorm.
var hfGemma2Names = with(hfNames, map[Role]string{
	FFNNorm:      "model.layers.%d.pre_feedforward_layernorm.weight",
	PostAttnNorm: "model.layers.%d.post_attention_layernorm.weight",
	PostFFNNorm:  "model.layers.%d.post_feedforward_layernorm.weight",
})

// with returns base with the entries of over replaced or added.
func with(base, over map[Role]string) map[Role]string {
	out := maps.Clone(base)
	maps.Copy(out, over)
	return out
}

// ropeLayout names how a file stores the rows of Q and K within each head.
type ropeLayout int

const (
	ropeHalves   ropeLayout = iota // Hugging Face rotate-half: pairs (i, i+Dh/2)
	ropeAdjacent                   // Meta original: pairs (2i, 2i+1)
)

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
