package train

import (
	"fmt"
	"math"

	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

// Config is one run's settings, with the defaults of the reference recipe.
// Fields marked "problem" define the result and must match on resume;
// "steering" fields may change on resume (with a logged warning).
type Config struct {
	Model       string      // problem: GGUF file or HF directory; "" = the embedded synthetic model
	Data        string      // problem: calibration data (text, .ids or llm.c .bin); "" = sampled from the synthetic model
	DataFormat  data.Format // problem: auto, text, ids or bin
	SeqLen      int         // problem: T, tokens per calibration sequence (512)
	CalibChunks int         // problem: N, calibration sequences (128)
	RandomPick  bool        // problem: pick the N chunks at random (seeded) instead of the first N
	Holdout     int         // problem: held-out chunks after the calibration ones for before/after errors (8; 0 = none)

	KDensity, VDensity float64   // problem: densities in (0, 1) (0.5); ranks per docs/METHOD.md §1
	KRank, VRank       int       // problem: explicit ranks overriding the densities (0 = from density)
	Budget             float64   // problem: cache bytes as a fraction of the fp16 cache; > 0 = ranks per layer and side from Allocate (docs/METHOD.md §7)
	Plan               string    // problem: plan file with the ranks per layer (from cskv allocate); overrides densities and ranks
	Objective          Objective // problem: what the allocation minimises: out (default), out-mixed, out-residual or kv
	MaxPoints          int       // problem: most candidate ranks per side in the allocation (32; 0 = all)
	AllocWindow        int       // problem: bi-branch window of the out-mixed objective's second term (32, the evaluation's W)
	Init               Init      // problem: svd, asvd or whiten (whiten; the reference: asvd)
	Alpha              float64   // problem: ASVD exponent α (0.5)
	Ridge              float64   // problem: whitening ridge; 0 = automatic (1e-6 · mean diagonal, raised ×10 until positive definite)

	Steps             int           // steering: Adam steps per layer (300); 0 = initialisation only
	LR                float64       // steering: peak learning rate (1e-3)
	Schedule          Schedule      // steering: constant or cosine (warm-up then cosine decay to 0)
	Warmup            int           // steering: warm-up steps of the cosine schedule
	Batch             int           // problem: sequences per step (8)
	Seed              uint64        // problem: seed of the batch sampler (0)
	LambdaKV          float64       // problem: weight of MSE(K,K̂)+MSE(V,V̂) (0; the reference: 1)
	LambdaOut         float64       // problem: weight of MSE(out,out̂) (1)
	OutSeqs           int           // problem: sequences of each batch in the output term (8; the reference: 2)
	OutWindow         int           // problem: bi-branch window inside out̂ (0 = every token reconstructed)
	OutWindowAlt      int           // problem: bi-branch window inside out̂ on the alternate steps (0 = off: every step uses OutWindow)
	OutWindowAltSteps int           // problem: alternate steps after each OutWindow step (0 = 1: every odd step)
	Window            kv.WindowMode // problem: the bi-branch rule, block or sliding, for OutWindow and evaluation

	KBits, VBits int       // problem: QAT bits (16 = off)
	KQuant       KeyQuant  // problem: keys per channel (KIVI, default) or per token
	QuantWindow  int       // problem: tokens per per-channel key group (32)
	QuantZero    ZeroPoint // problem: free (default) or clamp

	// Precision is the arithmetic of the matrix products: f32, bf16 or auto.
	// Run records it resolved (f32 or bf16), so that a resume computes as
	// the run did. Factors, Adam moments and checkpoints are float32 in
	// every precision.
	Precision linalg.Precision

	// FirstLayer, LastLayer: train only layers [FirstLayer, LastLayer), one
	// shard of a run (problem; 0, 0 = every layer). Stream is the residual
	// stream at FirstLayer written by CaptureShards ("" = embed and advance
	// from layer 0). A shard exports nothing: Merge assembles the shards.
	FirstLayer, LastLayer int
	Stream                string

	Out       string // run directory (checkpoints, run.json, projections); "" = none
	Export    string // projections file; "" = Out/projections.safetensors
	DType     DType  // export dtype: f32, f16 or bf16
	SaveEvery int    // steering: checkpoint every k steps (100; 0 = only at layer ends)
	Keep      int    // steering: checkpoints kept (3)
	Resume    bool   // continue from the latest checkpoint in Out
	Force     bool   // overwrite an Out that holds another run

	// StreamMemory is the memory (bytes) the residual streams of the
	// calibration and held-out sequences may take; above it they are
	// spilled to files in Out (the temporary directory without one) and
	// read back in chunks (0 = a quarter of the machine's memory). Results
	// are the same either way, so it is in no fingerprint.
	StreamMemory int64 `json:"-"`
}

// Defaults returns cskv's recipe, chosen by measurement on held-out
// calibration chunks (README, "Rank allocation under a budget, and the
// default recipe"): the reference recipe with the whitened init, the KV term
// weighted 0 (still computed and reported), the output term on every
// sequence of the batch, every key and value reconstructed in it on even
// steps and the bi-branch rule at W = 16 on odd ones, and 600 steps per
// layer instead of 300.
func Defaults() Config {
	c := Reference()
	c.Init, c.LambdaKV, c.OutSeqs = WhitenInit, 0, 8
	c.OutWindowAlt, c.Steps = 16, 600
	return c
}

// Reference returns the reference code's recipe (ASVD init, both terms
// weighted 1, the output term on 2 sequences of 8), the setting of the
// reference results the tests reproduce.
func Reference() Config {
	return Config{
		DataFormat: data.FormatAuto, SeqLen: 512, CalibChunks: 128, Holdout: 8,
		KDensity: 0.5, VDensity: 0.5, Init: ASVDInit, Alpha: 0.5,
		Objective: ObjectiveOut, MaxPoints: 32, AllocWindow: 32,
		Steps: 300, LR: 1e-3, Schedule: ScheduleConstant, Batch: 8,
		LambdaKV: 1, LambdaOut: 1, OutSeqs: 2, Window: kv.WindowBlock,
		KBits: 16, VBits: 16, KQuant: KeyPerChannel, QuantWindow: 32, QuantZero: ZeroFree,
		DType: DTypeF32, SaveEvery: 100, Keep: 3, Precision: linalg.F32,
	}
}

// Validate checks every field, naming the flag and value at fault.
func (c Config) Validate() error {
	for _, e := range []interface{ Check() error }{c.Init, c.Schedule, c.KQuant, c.QuantZero, c.DType, c.Objective} {
		if err := e.Check(); err != nil {
			return err
		}
	}
	bad := func(flag string, v any, why string) error { return fmt.Errorf("--%s %v: %s", flag, v, why) }
	switch {
	case !c.DataFormat.Valid():
		return bad("data-format", c.DataFormat, "want auto, text, ids or bin")
	case c.SeqLen < 2:
		return bad("seq-len", c.SeqLen, "must be at least 2")
	case c.CalibChunks < 1:
		return bad("calib-chunks", c.CalibChunks, "must be at least 1")
	case c.Holdout < 0:
		return bad("holdout", c.Holdout, "must be ≥ 0")
	case c.KRank == 0 && !(c.KDensity > 0 && c.KDensity < 1):
		return bad("k-density", c.KDensity, "must be in (0, 1)")
	case c.VRank == 0 && !(c.VDensity > 0 && c.VDensity < 1):
		return bad("v-density", c.VDensity, "must be in (0, 1)")
	case c.KRank < 0:
		return bad("k-rank", c.KRank, "must be ≥ 1")
	case c.VRank < 0:
		return bad("v-rank", c.VRank, "must be ≥ 1")
	case !(c.Budget >= 0 && c.Budget <= 1):
		return bad("budget", c.Budget, "must be in (0, 1]")
	case c.Budget > 0 && c.Plan != "":
		return bad("plan", c.Plan, "and --budget both given: the plan already holds the ranks")
	case c.MaxPoints < 0:
		return bad("max-points", c.MaxPoints, "must be ≥ 0")
	case c.AllocWindow < 1:
		return bad("alloc-window", c.AllocWindow, "must be ≥ 1")
	case !(c.Alpha >= 0) || math.IsInf(c.Alpha, 0):
		return bad("alpha", c.Alpha, "must be ≥ 0")
	case c.Ridge < 0:
		return bad("ridge", c.Ridge, "must be ≥ 0")
	case c.Steps < 0:
		return bad("steps", c.Steps, "must be ≥ 0")
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return bad("lr", c.LR, "must be positive")
	case c.Warmup < 0:
		return bad("warmup", c.Warmup, "must be ≥ 0")
	case c.Batch < 1:
		return bad("batch", c.Batch, "must be ≥ 1")
	case c.Steps > 0 && c.Batch > c.CalibChunks:
		return bad("batch", c.Batch, fmt.Sprintf("larger than the %d calibration sequences", c.CalibChunks))
	case c.LambdaKV < 0 || c.LambdaOut < 0 || math.IsNaN(c.LambdaKV+c.LambdaOut):
		return bad("lambda-kv/--lambda-out", fmt.Sprintf("%g/%g", c.LambdaKV, c.LambdaOut), "must be ≥ 0")
	case c.LambdaKV == 0 && c.LambdaOut == 0:
		return bad("lambda-kv/--lambda-out", "0/0", "both zero: nothing to train")
	case c.OutSeqs < 0 || c.OutSeqs > c.Batch:
		return bad("out-seqs", c.OutSeqs, fmt.Sprintf("must be in [0, --batch %d]", c.Batch))
	case c.OutWindow < 0:
		return bad("out-window", c.OutWindow, "must be ≥ 0")
	case c.OutWindowAlt < 0:
		return bad("out-window-alt", c.OutWindowAlt, "must be ≥ 0")
	case c.OutWindowAltSteps < 0:
		return bad("out-window-alt-steps", c.OutWindowAltSteps, "must be ≥ 0")
	case !c.Window.Valid():
		return bad("window-mode", int(c.Window), "want block or sliding")
	case !validBits[c.KBits]:
		return bad("k-bits", c.KBits, "want 2, 3, 4, 8 or 16")
	case !validBits[c.VBits]:
		return bad("v-bits", c.VBits, "want 2, 3, 4, 8 or 16")
	case c.QuantWindow < 1:
		return bad("quant-window", c.QuantWindow, "must be a positive integer")
	case c.KBits != 16 && c.KQuant == KeyPerChannel && c.SeqLen%c.QuantWindow != 0:
		return bad("quant-window", c.QuantWindow, fmt.Sprintf("does not divide --seq-len %d", c.SeqLen))
	case c.Precision > linalg.Auto:
		return bad("precision", int(c.Precision), "want f32, bf16 or auto")
	case c.SaveEvery < 0:
		return bad("save-every", c.SaveEvery, "must be ≥ 0")
	case c.Keep < 1:
		return bad("keep", c.Keep, "must be ≥ 1")
	case c.StreamMemory < 0:
		return bad("stream-memory", c.StreamMemory, "must be ≥ 0")
	case c.FirstLayer < 0 || c.LastLayer < 0 || (c.LastLayer != 0 && c.LastLayer <= c.FirstLayer):
		return bad("layers", fmt.Sprintf("[%d, %d)", c.FirstLayer, c.LastLayer), "want 0 ≤ first < last")
	case c.Resume && c.Out == "":
		return bad("resume", true, "needs --out (the run directory)")
	case c.Out == "" && c.Export == "":
		return fmt.Errorf("--out or an export path is required")
	}
	return nil
}

// layerRange is the layers [first, last) this run trains, checked against
// the model's depth.
func (c Config) layerRange(layers int) (first, last int, err error) {
	first, last = c.FirstLayer, c.LastLayer
	if last == 0 {
		last = layers
	}
	if first >= last || last > layers {
		return 0, 0, fmt.Errorf("layers [%d, %d): outside the model's %d layers", first, last, layers)
	}
	return first, last, nil
}

var validBits = map[int]bool{2: true, 3: true, 4: true, 8: true, 16: true}

// open selects c.Precision for the matrix products of the whole program
// (recording it resolved, f32 or bf16, in c) and opens c's model with the
// BLAS threads its width wants; closeModel restores the threads, closes the
// model and restores the precision.
func (c *Config) open() (m *model.Model, closeModel func(), err error) {
	prev := linalg.CurrentPrecision()
	if err := linalg.SetPrecision(c.Precision); err != nil {
		return nil, nil, fmt.Errorf("--precision %s: %w", c.Precision, err)
	}
	c.Precision = linalg.CurrentPrecision()
	if m, err = OpenModel(c.Model); err != nil {
		linalg.SetPrecision(prev)
		return nil, nil, err
	}
	threads := linalg.ThreadsFor(m.Config.Hidden)
	return m, func() {
		threads()
		m.Close()
		linalg.SetPrecision(prev)
	}, nil
}

// quant is the quantisation of the compressed features that the QAT settings
// describe.
func (c Config) quant() kv.Quant { return c.Cache(0).quant() }

// idleOutWindows are the output term's bi-branch windows (--out-window and
// --out-window-alt) at which it is zero: a window of at least --seq-len
// keeps every key original (kv.WindowMode.OriginalFrom is 0 in either
// mode), so the compressed attention equals the original. train.Run warns.
func (c Config) idleOutWindows() []int {
	if c.LambdaOut == 0 || c.OutSeqs == 0 || c.Steps == 0 {
		return nil
	}
	var idle []int
	for _, w := range (graph.LayerSpec{OutWindow: c.OutWindow, OutWindowAlt: c.OutWindowAlt}).OutWindows() {
		if w >= c.SeqLen {
			idle = append(idle, w)
		}
	}
	return idle
}
