// Package model is the frozen decoder network of the families in the
// architecture table (families: Llama, Mistral, Qwen2, Qwen3, Phi-3,
// Gemma-2): file formats (GGUF and Hugging Face safetensors directories)
// mapped through the family's name table to canonical weights, config keys
// read through the family's key table (anything not understood is refused),
// the tokenizer, and a float32 forward pass over BLAS.
//
// Every attention follows Block.Attn (Attention): the RoPE frequencies and
// attention factor of the one scaling table (ropeTypes), scale, soft-cap,
// sliding window and the q/k norms. Fused tensors (Phi-3) are split and
// RMSNorm offsets (Gemma-2's 1 + w) added at load, so consumers see plain
// Wq, Wk, Wv, Wgate, Wup and x/rms(x)·w norms.
//
// Shape legend: N sequences, T tokens per sequence, D model dim (Hidden),
// H query heads, Hkv KV heads, Dh head dim, KV = Hkv·Dh, F feed-forward dim,
// V vocabulary. Weight matrices are row-major [out, in] (y = x·Wᵀ).
//
// RoPE: in memory every Q/K weight row is in the Hugging Face rotate-half
// layout (pairs x[i], x[i+Dh/2]). Files whose rows are in Meta's adjacent-pair
// layout (llama GGUFs) are permuted once at load (see RopeToHalves), so every
// consumer — the forward, the training graph, exported factors — sees one
// convention.
package model
