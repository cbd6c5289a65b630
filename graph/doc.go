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
// (M, KV); likewise V̂. KV term MSE(K, K̂) + MSE(V, V̂) on the pre-norm keys.
// Output term on the first Mo rows, under the layer's rule LayerSpec.Attn
// (model.Attention): keys RoPE(KNorm(K̂)) with the scaling table's
// frequencies and attention factor, scores times Scale and soft-capped,
// causal grouped-query attention limited to the layer's sliding window, with
// the bi-branch rule (key j is the original one for query t when it lies in
// t's bi-branch window), times Woᵀ, compared with the original attention
// output (docs/METHOD.md §3). The comparison is computed on the heads, in
// the metric G = Woᵀ·Wo (QD, QD), formed once per graph:
// ‖(Ô − O)·Woᵀ‖² = Σ rows (Ô − O)·G·(Ô − O)ᵀ, and its gradient is
// 2·(Ô − O)·G, so a step runs one product with G instead of the projection
// and its input gradient.
//
// What does not depend on the factors (the targets X·Wkᵀ, X·Wvᵀ, the queries
// RoPE(QNorm(Q))·Scale, the original attention output) is computed once per batch outside the
// graph with package linalg. The heavy nodes are custom gorgonia ops
// (ops.go) whose forward and backward are direct BLAS calls into buffers
// reused across steps; the causal softmax is fused into the attention op
// (correct per-row maximum, no mask tensor), which keeps its probabilities
// for the backward pass when they fit (keepBudget) and recomputes them
// otherwise. Only the needed subgraph is compiled (CompileFunction over
// cost and the four factor gradients), so no gradient is ever formed for X,
// the frozen weights or the precomputed targets.
//
// Data path, from spec to loss: NewLayer validates the spec (spec.go) and
// builds the graph once (build in layer.go: the nodes above, over buffers the
// ops own); each Run copies the batch into X and computes the
// factor-independent quantities (core.loadTargets), then the tape machine
// runs the forward and backward of the graph (ops.go, fakequant.go, kernels.go;
// the attention kernel is package attn, shared with the frozen forward)
// and the Loss is read from the MSE ops (core.step). Eval walks the same
// forward in plain Go. A Layer computes in float32; the code is generic in
// the element type only so that this package's tests can build the same
// graph in float64 (newCore[float64]) for gradient checks against an
// independent reference.
//
// Use: NewLayer(spec, init); per step Run(x), then update Params()[i].Value
// in place from Params()[i].Grad; Eval(x) for held-out losses; Factors() for
// copies; Close(). A Layer is not safe for concurrent use.
package graph
