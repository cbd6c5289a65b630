// Package model is the frozen Llama-family network: file formats (GGUF and
// Hugging Face safetensors directories) mapped through one name table to
// canonical weights, the tokenizer, and a float32 forward pass over BLAS.
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
