// Package kv holds the nouns of CSKV channel shrinking that every other
// package shares: one layer's low-rank factors (Factors) with their tensor
// names, the bi-branch window rule (WindowMode, a flag.Value) and the
// quantisation setting of the compressed features (Quant). It is a leaf: it
// imports nothing of the project but package quant, and model, graph,
// kvcache, checkpoints, train and eval all import it.
//
// Shape legend (row-major, PyTorch [out, in] weights, y = x·Wᵀ):
//
//	D       hidden size
//	KV      Hkv·Dh, the width of one token's keys (and values)
//	Rk, Rv  key and value ranks (per layer)
//	T       tokens of a sequence; W the bi-branch window
//
// A layer's keys are approximated as K̂ = (X·Akᵀ)·Bkᵀ, Wk ≈ Bk·Ak, and its
// values as V̂ = (X·Avᵀ)·Bvᵀ; the compressed features Ck = X·Akᵀ (T, Rk) and
// Cv = X·Avᵀ (T, Rv) are what the cache holds (docs/METHOD.md §1, §5).
package kv
