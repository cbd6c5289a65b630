// Package graph builds and runs the per-layer CSKV objective in gorgonia: the
// frozen attention of one decoder layer as constants, the low-rank factors
// Ak, Bk, Av, Bv as the only learnables (docs/METHOD.md §3, §4, §5).
//
// It owns every gorgonia call in the project. It does no I/O, no logging and
// no loop over training steps: (*Layer).Run does one forward and backward,
// and the optimiser (package train) updates Params in place afterwards.
//
// Shape legend (row-major, PyTorch [out, in] weights, y = x·Wᵀ):
//
//	N   sequences in a batch (LayerSpec.Seqs); No = LayerSpec.OutSeqs of them feed the output term
//	T   tokens per sequence (LayerSpec.Tokens); positions 0..T−1
//	M   rows of a batch, N·T; Mo = No·T
//	D   hidden size
//	H   query heads, Hkv key/value heads, G = H/Hkv, Dh head dimension
//	KV  Hkv·Dh; QD = H·Dh
//	Rk, Rv  key and value ranks
//
// The graph: Ck = X·Akᵀ (M, Rk), optionally fake-quantised; K̂ = Ĉk·Bkᵀ + bk
// (M, KV); likewise V̂. KV term MSE(K, K̂) + MSE(V, V̂). Output term on the
// first Mo rows: RoPE (rotate-half) on K̂, causal grouped-query attention
// with the bi-branch rule (key j is the original one for query t when it lies
// in t's window), times Woᵀ, compared with the original attention output.
//
// What does not depend on the factors (the targets X·Wkᵀ, X·Wvᵀ, RoPE(Q)/√Dh,
// the original attention output) is computed once per batch outside the
// graph with package linalg. The heavy nodes are custom gorgonia ops
// (ops.go) whose forward and backward are direct BLAS calls into buffers
// reused across steps; the causal softmax is fused into the attention op
// (correct per-row maximum, no mask tensor), which keeps its probabilities
// for the backward pass when they fit (keepBudget) and recomputes them
// otherwise. Only the needed subgraph is compiled (CompileFunction over
// cost and the four factor gradients), so no gradient is ever formed for X,
// the frozen weights or the precomputed targets.
//
// Use: NewLayer(spec, init); per step Run(x), then update Params()[i].Value
// in place from Params()[i].Grad; Eval(x) for held-out losses; Factors() for
// copies; Close(). Float64 specs (gradient checks) use Params64. A Layer is
// not safe for concurrent use.
package graph
