package train

import (
	"runtime"
	"slices"

	"github.com/cskv/cskv/attn"
	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

// GCPercent is the garbage collector's GOGC that cmd/cskv sets when the
// environment names none: the heap grows to (1 + GCPercent/100) × its live
// bytes before a collection. The heap is almost all pointer-free float
// slices, so a collection costs little; Go's default of 100 would let a
// run's memory reach twice what it holds.
const GCPercent = 25

// Memory is the peak-memory formula of a run (README, "Memory at paper
// scale"), term by term, in bytes. Total is
//
//	Runtime + GC·(Model + Blocks + Streams + max(Layer, Advance))
//	Layer = Gram + Targets + max(Scan, Init, Graph)
//
// where the layer phase (capture, init, training, held-out evaluation) and
// the advance phase never overlap.
type Memory struct {
	Runtime int64   `json:"runtime"` // Go runtime, BLAS buffers, binary: a constant
	GC      float64 `json:"gc"`      // 1 + GCPercent/100
	Model   int64   `json:"model"`   // embedding and output matrices, V·D·4 each
	Blocks  int64   `json:"blocks"`  // two decoder layers' weights: the next is read while the last is referenced
	Streams int64   `json:"streams"` // (N+H)·T·D·4 in memory; 0 when spilled
	Spilled bool    `json:"spilled"` // the streams exceed Config.StreamMemory
	Scan    int64   `json:"scan"`    // the streaming pass: a chunk of h and of X, float64 rows for XᵀX
	Gram    int64   `json:"gram"`    // XᵀX, D²·8 (whitened init, or D ≤ 1024)
	Init    int64   `json:"init"`    // the init's float64 workspace: 5·max(D, KV)²·8
	Targets int64   `json:"targets"` // N·T·KV·8 when that is at most 1 GiB, else 0
	Graph   int64   `json:"graph"`   // the larger of the training graph (with the batch and Adam; one graph for both windows of --out-window-alt) and the held-out one; in bf16 with attention's rounded keys and values
	Advance int64   `json:"advance"` // Block.Forward's temporaries for advanceGroup(T) sequences, and in bf16 the block's rounded weights
	Layer   int64   `json:"layer"`   // Gram + Targets + max(Scan, Init, Graph)
	Total   int64   `json:"total"`   // the formula
}

// collect runs the collector at a phase boundary. The formula's phases
// (capture, init, the held-out and training graphs, advance) never hold
// their memory at once, but under GCPercent the last phase's garbage would
// stay until the heap reached 1.25 × what it held with it: the next phase
// would allocate on top of it (measured: the held-out graph on top of the
// closed training graph, 9.9 GiB for a formula of 7.7 on the README's 7B
// run). The heap is almost all pointer-free, so a collection costs
// milliseconds.
func collect() { runtime.GC() }

// memRuntime is the formula's constant: the Go runtime, the BLAS library's
// buffers and the binary.
const memRuntime = 256 << 20

// EstimateMemory evaluates the peak-memory formula for cfg on a model of
// shape mc with the given ranks (the largest of the run's layers).
func EstimateMemory(cfg Config, mc model.Config, kRank, vRank int) Memory {
	const f4, f8 = 4, 8
	N, H, T := int64(cfg.CalibChunks), int64(cfg.Holdout), int64(cfg.SeqLen)
	D, KV, QD, F, V := int64(mc.Hidden), int64(mc.KVDim()), int64(mc.QDim()), int64(mc.FFN), int64(mc.Vocab)
	m := Memory{Runtime: memRuntime, GC: 1 + GCPercent/100.0}
	m.Model = V * D * f4
	if !mc.TiedOutput {
		m.Model *= 2
	}
	m.Blocks = 2 * f4 * (D*(2*QD+2*KV) + 3*D*F + 2*D)
	streams := streamBytes(int(N+H), int(T), int(D))
	m.Spilled = streams > cfg.streamMemory()
	if !m.Spilled {
		m.Streams = streams
	}
	chunk := min(int64(scanRows(int(D))), N*T)
	m.Scan = chunk*D*2*f4 + statsChunkRows*D*f8
	if cfg.Init == WhitenInit || D <= 1024 {
		m.Gram = D * D * f8
	}
	m.Init = 5 * max(D, KV) * max(D, KV) * f8
	if N*T*KV*f8 <= targetBudget && cfg.Steps > 0 {
		m.Targets = N * T * KV * f8
	}
	bo := int64(min(cfg.OutSeqs, cfg.Batch))
	P := (D + KV) * int64(kRank+vRank) // the factors' elements
	// The graph holds its buffers and the factors' values and gradients;
	// with --out-window-alt its attention keeps a store for each window.
	windows := graph.LayerSpec{OutWindow: cfg.OutWindow, OutWindowAlt: cfg.OutWindowAlt}.OutWindows()
	bf16 := cfg.Precision.Resolve() == linalg.BF16
	graphMem := func(rows, outSeqs int64, windows []int, backward bool) int64 {
		return graphBytes(mc, rows, outSeqs, T, int64(kRank), int64(vRank), windows, cfg.Window, bf16, backward)
	}
	train := graphMem(int64(cfg.Batch)*T, bo, windows, true) + 2*P*f4
	train += 2 * P * f4                             // Adam's moments
	train += int64(cfg.Batch) * T * (D + 2*KV) * f4 // the batch and its targets
	held := graphMem(H*T, H, windows[:1], false) + 2*P*f4 + H*T*D*f4
	if bf16 {
		// attention's bf16 roundings of the output sequences' reconstructed
		// and original keys and values (attn.Kernel freezes them), and the
		// graph's frozen operands rounded once: Wq, Wk, Wv and the metric
		// Woᵀ·Wo
		train += 4*2*bo*T*KV + 2*QD*QD + 2*D*(QD+2*KV)
		held += 4*2*H*T*KV + 2*QD*QD + 2*D*(QD+2*KV)
	}
	m.Graph = max(train, held)
	m.Layer = m.Gram + m.Targets + max(m.Scan, m.Init, m.Graph)
	g := int64(advanceGroup(int(T))) * T
	m.Advance = g * (2*D + 2*QD + 2*KV + 2*F) * f4
	if m.Spilled {
		m.Advance += g * D * f4 // the group read from the file
	}
	if cfg.Precision.Resolve() == linalg.BF16 {
		m.Advance += 2 * (D*(2*QD+2*KV) + 3*D*F) // the block's weights rounded once (model.Block.Freeze)
	}
	if mc.QDim() >= model.TiledWidth { // the tiled attention's tiles and statistics
		tiles, stats := attn.WorkspaceBytes(int(g/T), int(T), attnRule(mc), 0, kv.WindowBlock, bf16, false)
		m.Advance += tiles + stats
	}
	m.Total = m.Runtime + int64(m.GC*float64(m.Model+m.Blocks+m.Streams+max(m.Layer, m.Advance)))
	return m
}

// exceeds reports whether the formula's peak is above machine bytes of
// memory (0: unknown, never exceeded); train.Run then warns. The formula
// is an upper estimate (the README's measurement peaked at 81% of it), so
// a run above it is not refused.
func (m Memory) exceeds(machine int64) bool { return machine > 0 && m.Total > machine }

// graphBytes is the memory of the layer graph on rows = B·T rows with the
// output term on outSeqs sequences of T tokens and the bi-branch window
// and mode: per row X, the K and V targets, the compressed features and
// their gradients, K̂ and V̂ with their differences and gradients (D +
// 10·KV + 2·(Rk+Rv) floats); per output row the queries, the original keys
// and heads, the reconstructed heads, their error, its product with the
// metric G and the heads' gradient (6·QD + 4·KV floats); the metric G =
// Woᵀ·Wo (QD² floats); for each of its bi-branch windows the attention
// probabilities kept from the forward for the backward (attn.StoreBytes:
// none when they would exceed attention's budget, bf16 in bf16 on wide
// layers); and attention's workspace: one set of per-worker tiles, shared
// by the graph's kernels and as large as the widest window's (its
// backward's when backward), and each kernel's softmax statistics
// (attn.WorkspaceBytes; the all-original kernel of the targets is one).
func graphBytes(mc model.Config, rows, outSeqs, T, kRank, vRank int64, windows []int, mode kv.WindowMode, bf16, backward bool) int64 {
	D, KV, QD := int64(mc.Hidden), int64(mc.KVDim()), int64(mc.QDim())
	n := rows * (D + 10*KV + 2*(kRank+vRank))
	var store int64
	if outSeqs > 0 {
		mo := outSeqs * T
		n += mo*(6*QD+4*KV) + QD*QD
		r := attnRule(mc)
		for _, w := range windows {
			store += attn.StoreBytes(int(outSeqs), int(T), r, w, mode, bf16)
		}
		tiles, stats := attn.WorkspaceBytes(int(outSeqs), int(T), r, slices.Max(windows), mode, bf16, backward)
		store += tiles + stats*int64(1+len(windows))
	}
	return 4*n + store
}

// attnRule is the attention kernel's rule of a model of shape mc.
func attnRule(mc model.Config) attn.Rule {
	return attn.Rule{Heads: mc.Heads, KVHeads: mc.KVHeads, HeadDim: mc.QDim() / mc.Heads, SoftCap: float32(mc.AttnSoftCap)}
}
