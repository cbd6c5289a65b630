// Package kvcache is the bi-branch KV cache of CSKV factors (docs/METHOD.md
// §5) in its two forms, both set by one Settings per model:
//
//   - the real cache, one Layer per decoder layer, for token-by-token
//     decoding (NewCaches adapts it to model.Decoder);
//   - the simulated cache, one Compressor per layer, a model.KVOverride that
//     reconstructs the keys and values of whole sequences at once for the
//     parallel forward (NewCompressors), used by package eval to measure
//     perplexity and reconstruction errors.
//
// With Settings.FP16Cache the two give the same logits (a regression test
// holds them to 1e-4), and the simulated cache under quantisation equals the
// training graph's quantisation-aware loss.
//
// Shape legend: T tokens appended so far (Len), D = KVDim = NKVHeads·HeadDim,
// Rk, Rv the key and value ranks.
//
// # Branches
//
//   - Full-precision branch: the original pre-RoPE keys and values of the
//     tokens a present or future query still reads as originals, stored in
//     float32 — the precision the rest of this implementation computes in, so
//     decoding with the cache reproduces the parallel evaluation's logits.
//     This branch never holds more than W tokens (8·D·W bytes per layer).
//   - Compressed branch: the features Ck (Rk) and Cv (Rv) of every token, kept
//     as bit-packed codes (quant.AppendPacked, one continuous stream per side,
//     token-major (T, R)) plus per-group fp16 scale and zero, appended as
//     groups complete. Per-token groups complete when the token is appended;
//     a per-channel (KIVI) group of G tokens completes with its G-th token, and
//     until then its tokens' features wait as float32 (pending). With bits 16
//     a side stores its features as fp16 instead.
//
// # Which tokens are original
//
// For the query at position t (the last appended token):
//
//	Block   (reference code): j is original iff floor(j/W) == floor(t/W)
//	Sliding (paper's text):   j is original iff t − j < W
//
// Every other j ≤ t is reconstructed as K̂_j[d] = Σ_r dequant(Ck_j)[r]·Bk[d, r]
// (+ bk[d] when the model's key projection has a bias, Layer.SetBiases; same
// for V). Keys leave the cache before the key norm and RoPE: the decoder
// applies the layer's model.Attention to them as to the original keys. Block keeps the originals of the current block (dropped when
// the next block starts); Sliding keeps the last W tokens in a ring.
//
// # Supported quantisation groups
//
// Per-token groups (any GroupSize that divides the side's rank) and per-channel
// groups whose GroupSize G divides the window W. With G | W, a token that a
// query reads from the compressed branch always sits in a complete group that
// lies entirely in the past: Block reconstructs only j < floor(t/W)·W, a
// multiple of G that is ≤ t+1; Sliding reconstructs only j ≤ t − W, and the
// completed prefix floor((t+1)/G)·G ≥ t + 2 − G > t − W. Other group sizes are
// rejected by Config.Validate.
//
// # Arithmetic
//
// Reconstruction is a plain float32 loop, accumulating r = 0 … R−1 in order,
// each product rounded to float32 before it is added (no fused multiply-add),
// so results are reproducible bit for bit and equal the "parallel" evaluation
// B·FakeQuant(C) done the same way. Dequantisation goes through
// quant.Dequantize, which equals quant.FakeQuant bit for bit.
//
// # Memory
//
// Bytes is the one formula for what a Layer holds, and AllocatedBytes counts
// the live length of every backing store; the two agree after every Append.
// The factors Bk, Bv (model weights) and the transient workspace of KV are not
// cache memory and are not counted.
package kvcache
