package train

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

// StepInfo reports one training step.
type StepInfo struct {
	Layer, Layers int
	Step, Steps   int // Step is 1-based
	LR            float64
	Loss          graph.Loss
}

// LayerInfo reports one finished layer.
type LayerInfo struct {
	Layer        int         `json:"layer"`
	KRank        int         `json:"k_rank"`
	VRank        int         `json:"v_rank"`
	Init         string      `json:"init"`
	Ridge        float64     `json:"ridge,omitempty"`          // whitening ridge used
	CalibKVInit  float64     `json:"calib_kv_init,omitempty"`  // calibration KV loss (MSE K + MSE V) after init
	CalibKVFinal float64     `json:"calib_kv_final,omitempty"` // ... after training
	HeldBefore   *graph.Loss `json:"held_before,omitempty"`    // held-out losses after init
	HeldAfter    *graph.Loss `json:"held_after,omitempty"`     // held-out losses after training
	CurveKV      []float64   `json:"curve_kv,omitempty"`       // per-step KV term
	CurveOut     []float64   `json:"curve_out,omitempty"`      // per-step output term
	Seconds      float64     `json:"seconds"`
}

// Env is how Run talks to its caller: a logger and callbacks. Run never
// prints.
type Env struct {
	Log     logrus.FieldLogger
	OnStep  func(StepInfo)            // after every training step
	OnLayer func(LayerInfo)           // after every layer
	OnPhase func(phase string, l int) // "capture", "init", "train", "advance" at layer l
}

// Result is what a finished run produced.
type Result struct {
	Model       *model.Model
	Config      Config
	Layers      []LayerInfo
	Projections string // exported file
	PeakRSS     int64  // bytes, from /proc (0 where unknown)
	Seconds     float64
}

// Run is the spine of cskv: open the model, cut the calibration sequences,
// then for every layer capture its attention inputs, initialise the factors,
// train them, checkpoint, and advance the hidden states with the original
// layer; finally export the projections. The caller owns m's lifetime only
// through Result.Model (closed by the caller).
func Run(ctx context.Context, cfg Config, env Env) (*Result, error) {
	start := time.Now()
	env = env.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := openModel(cfg.Model)
	if err != nil {
		return nil, err
	}
	res := &Result{Model: m, Config: cfg}
	if m.Config.Hidden < smallHidden { // small products: threads spin more than they compute
		prev := linalg.Threads()
		linalg.SetThreads(1)
		defer linalg.SetThreads(prev)
	}
	fail := func(err error) (*Result, error) { m.Close(); return nil, err }

	calib, held, err := calibration(m, cfg)
	if err != nil {
		return fail(err)
	}
	kRank, vRank, err := ranks(m.Config, cfg)
	if err != nil {
		return fail(err)
	}
	run, err := openRun(cfg, m, calib, kRank, vRank, env.Log)
	if err != nil {
		return fail(err)
	}
	env.Log.WithFields(logrus.Fields{"model": m.Path, "layers": m.Config.Layers, "calib_seqs": len(calib),
		"seq_len": cfg.SeqLen, "k_rank": kRank, "v_rank": vRank, "init": cfg.Init, "steps": cfg.Steps}).Info("run started")

	h := newStream(m, calib)    // (N·T, D) residual stream of the calibration sequences
	hHeld := newStream(m, held) // (H·T, D) residual stream of the held-out sequences
	if err := errors.Join(h.err, hHeld.err); err != nil {
		return fail(err)
	}
	factors := make([]graph.Factors, m.Config.Layers)
	copy(factors, run.finished)
	res.Layers = append(res.Layers, run.history...)
	for l := 0; l < m.Config.Layers; l++ {
		blk, err := m.Block(l)
		if err != nil {
			return fail(err)
		}
		if l >= run.layer { // layers before the checkpoint's are already done
			env.OnPhase("capture", l)
			x := h.attnInput(m.Config, blk) // (N·T, D)
			xHeld := hHeld.attnInput(m.Config, blk)
			info, f, err := trainLayer(ctx, cfg, env, run, m.Config, blk, l, kRank, vRank, x, xHeld)
			if err != nil {
				return fail(fmt.Errorf("layer %d: %w", l, err))
			}
			factors[l] = f
			res.Layers = append(res.Layers, info)
			run.finishLayer(l, f, info)
			if err := run.save(l+1, 0, nil, nil, nil, LayerInfo{}); err != nil {
				return fail(err)
			}
			env.OnLayer(info)
		}
		if l == m.Config.Layers-1 {
			break // nothing reads the last layer's output
		}
		env.OnPhase("advance", l)
		if err := errors.Join(h.advance(m.Config, blk), hHeld.advance(m.Config, blk)); err != nil {
			return fail(fmt.Errorf("layer %d: advance: %w", l, err))
		}
	}
	if res.Projections, err = export(cfg, m, factors, kRank, vRank, res.Layers); err != nil {
		return fail(err)
	}
	res.PeakRSS = PeakRSS()
	res.Seconds = time.Since(start).Seconds()
	env.Log.WithFields(logrus.Fields{"projections": res.Projections, "seconds": fmt.Sprintf("%.1f", res.Seconds),
		"peak_rss_mib": res.PeakRSS >> 20}).Info("run finished")
	return res, nil
}

// trainLayer initialises one layer's factors from its captured inputs and
// trains them, resuming from the run's checkpoint state when it is for l.
func trainLayer(ctx context.Context, cfg Config, env Env, run *runState, mc model.Config, blk *model.Block,
	l, kRank, vRank int, x, xHeld []float32) (LayerInfo, graph.Factors, error) {
	t0 := time.Now()
	info := LayerInfo{Layer: l, KRank: kRank, VRank: vRank, Init: cfg.Init}
	stats, err := NewStats(mc.Hidden, cfg.Init == "whiten" || mc.Hidden <= 1024)
	if err != nil {
		return info, graph.Factors{}, err
	}
	stats.Add(x)
	env.OnPhase("init", l)
	f, ridge, err := initFactors(cfg, mc, blk, stats, kRank, vRank)
	if err != nil {
		return info, f, err
	}
	info.Ridge = ridge
	if ridge > 0 {
		env.Log.WithFields(logrus.Fields{"layer": l, "ridge": ridge}).Info("whitening ridge added to XᵀX")
	}
	if stats.Gram != nil {
		info.CalibKVInit = calibKV(stats, blk, f, mc, kRank, vRank)
	}
	startStep := 0
	var rng *rand.PCG
	var adam *Adam
	if run.layer == l && run.step > 0 { // resume mid-layer
		f, adam, rng, startStep = run.current, run.adam, run.rng, run.step
		info = run.partial
		env.Log.WithFields(logrus.Fields{"layer": l, "step": startStep}).Info("resuming layer")
	} else {
		rng = rand.NewPCG(cfg.Seed, uint64(l)+1)
	}
	if cfg.Steps == 0 {
		if len(xHeld) > 0 {
			if info.HeldBefore, err = heldOut(cfg, mc, blk, kRank, vRank, f, xHeld); err != nil {
				return info, f, err
			}
		}
		info.Seconds = time.Since(t0).Seconds()
		return info, f, nil
	}
	spec := layerSpec(cfg, mc, blk, kRank, vRank, cfg.Batch)
	layer, err := graph.NewLayer(spec, f)
	if err != nil {
		return info, f, err
	}
	defer layer.Close()
	if len(xHeld) > 0 && startStep == 0 {
		if info.HeldBefore, err = heldOut(cfg, mc, blk, kRank, vRank, f, xHeld); err != nil {
			return info, f, err
		}
	}
	if adam == nil {
		var sizes []int
		for _, p := range layer.Params() {
			sizes = append(sizes, len(p.Value))
		}
		adam = NewAdam(sizes)
	}
	env.OnPhase("train", l)
	T, D := cfg.SeqLen, mc.Hidden
	nSeq := len(x) / (T * D)
	batch := make([]float32, cfg.Batch*T*D) // (Batch·T, D)
	params := layer.Params()
	for step := startStep; step < cfg.Steps; step++ {
		if err := ctx.Err(); err != nil {
			cur := layer.Factors()
			if serr := run.save(l, step, &cur, adam, rng, info); serr != nil {
				return info, f, errors.Join(err, serr)
			}
			return info, f, fmt.Errorf("interrupted at step %d (checkpoint written): %w", step, err)
		}
		pickBatch(batch, x, nSeq, T*D, cfg.Batch, rng)
		loss, err := layer.Run(batch)
		if err != nil {
			return info, f, fmt.Errorf("step %d: %w", step+1, err)
		}
		if math.IsNaN(loss.Total) || math.IsInf(loss.Total, 0) || !finiteGrads(params) {
			return info, f, fmt.Errorf("step %d: non-finite loss or gradients (loss %g); the last good checkpoint is kept", step+1, loss.Total)
		}
		lr := cfg.LRAt(step, cfg.Steps)
		adam.Step(params, lr)
		info.CurveKV = append(info.CurveKV, loss.KV)
		info.CurveOut = append(info.CurveOut, loss.Out)
		env.OnStep(StepInfo{Layer: l, Layers: mc.Layers, Step: step + 1, Steps: cfg.Steps, LR: lr, Loss: loss})
		if cfg.SaveEvery > 0 && (step+1)%cfg.SaveEvery == 0 && step+1 < cfg.Steps {
			cur := layer.Factors()
			if err := run.save(l, step+1, &cur, adam, rng, info); err != nil {
				return info, f, err
			}
		}
	}
	f = layer.Factors()
	if len(xHeld) > 0 {
		if info.HeldAfter, err = heldOut(cfg, mc, blk, kRank, vRank, f, xHeld); err != nil {
			return info, f, err
		}
	}
	if stats.Gram != nil {
		info.CalibKVFinal = calibKV(stats, blk, f, mc, kRank, vRank)
	}
	info.Seconds = time.Since(t0).Seconds()
	fields := logrus.Fields{"layer": l, "seconds": fmt.Sprintf("%.1f", info.Seconds)}
	if info.HeldBefore != nil && info.HeldAfter != nil {
		fields["held_k_rel"] = fmt.Sprintf("%.4f→%.4f", info.HeldBefore.KRel, info.HeldAfter.KRel)
		fields["held_v_rel"] = fmt.Sprintf("%.4f→%.4f", info.HeldBefore.VRel, info.HeldAfter.VRel)
		fields["held_out_rel"] = fmt.Sprintf("%.4f→%.4f", info.HeldBefore.OutRel, info.HeldAfter.OutRel)
	}
	env.Log.WithFields(fields).Info("layer done")
	return info, f, nil
}

// heldOut evaluates factors f on the held-out sequences xHeld (all of them
// in both terms, whatever the training weights).
func heldOut(cfg Config, mc model.Config, blk *model.Block, kRank, vRank int, f graph.Factors, xHeld []float32) (*graph.Loss, error) {
	n := len(xHeld) / (cfg.SeqLen * mc.Hidden)
	spec := layerSpec(cfg, mc, blk, kRank, vRank, n)
	spec.OutSeqs, spec.LambdaKV, spec.LambdaOut = n, 1, 1
	layer, err := graph.NewLayer(spec, f)
	if err != nil {
		return nil, fmt.Errorf("held-out evaluation: %w", err)
	}
	defer layer.Close()
	l, err := layer.Eval(xHeld)
	if err != nil {
		return nil, fmt.Errorf("held-out evaluation: %w", err)
	}
	return &l, nil
}

// pickBatch copies `batch` distinct sequences of x (nSeq of seqSize floats),
// drawn with rng, into dst.
func pickBatch(dst, x []float32, nSeq, seqSize, batch int, rng *rand.PCG) {
	r := rand.New(rng)
	idx := make([]int, nSeq)
	for i := range idx {
		idx[i] = i
	}
	for i := 0; i < batch; i++ { // partial Fisher–Yates
		j := i + r.IntN(nSeq-i)
		idx[i], idx[j] = idx[j], idx[i]
		copy(dst[i*seqSize:(i+1)*seqSize], x[idx[i]*seqSize:(idx[i]+1)*seqSize])
	}
}

func finiteGrads(ps []graph.Param) bool {
	for _, p := range ps {
		for _, g := range p.Grad {
			if math.IsNaN(float64(g)) || math.IsInf(float64(g), 0) {
				return false
			}
		}
	}
	return true
}

// layerSpec describes layer blk's objective for the graph.
func layerSpec(cfg Config, mc model.Config, blk *model.Block, kRank, vRank, seqs int) graph.LayerSpec {
	mode := graph.WindowBlock
	if cfg.Window == "sliding" {
		mode = graph.WindowSliding
	}
	return graph.LayerSpec{
		Hidden: mc.Hidden, NHeads: mc.Heads, NKVHeads: mc.KVHeads, HeadDim: mc.HeadDim, RopeBase: mc.RopeBase,
		Wq: blk.Wq, Wk: blk.Wk, Wv: blk.Wv, Wo: blk.Wo, Bq: blk.Bq, Bk: blk.Bk, Bv: blk.Bv,
		KRank: kRank, VRank: vRank, Seqs: seqs, Tokens: cfg.SeqLen,
		OutSeqs: min(cfg.OutSeqs, seqs), LambdaKV: cfg.LambdaKV, LambdaOut: cfg.LambdaOut,
		OutWindow: cfg.OutWindow, WindowMode: mode,
		Quant: graph.QuantSpec{KBits: cfg.KBits, VBits: cfg.VBits, KPerChannel: cfg.KQuant == "channel",
			QuantWindow: cfg.QuantWindow, ClampZero: cfg.QuantZero == "clamp"},
	}
}

// initFactors runs the configured initialisation for K and V.
func initFactors(cfg Config, mc model.Config, blk *model.Block, st *Stats, kRank, vRank int) (graph.Factors, float64, error) {
	var f graph.Factors
	var err error
	var rk, rv float64
	kv, d := mc.KVDim(), mc.Hidden
	switch cfg.Init {
	case "svd":
		if f.Ak, f.Bk, err = InitSVD(blk.Wk, kv, d, kRank); err == nil {
			f.Av, f.Bv, err = InitSVD(blk.Wv, kv, d, vRank)
		}
	case "asvd":
		mean := st.MeanAbs()
		if f.Ak, f.Bk, err = InitASVD(blk.Wk, kv, d, kRank, mean, cfg.Alpha); err == nil {
			f.Av, f.Bv, err = InitASVD(blk.Wv, kv, d, vRank, mean, cfg.Alpha)
		}
	case "whiten":
		if f.Ak, f.Bk, rk, err = InitWhiten(blk.Wk, kv, d, kRank, st.Gram, cfg.Ridge); err == nil {
			f.Av, f.Bv, rv, err = InitWhiten(blk.Wv, kv, d, vRank, st.Gram, cfg.Ridge)
		}
	}
	if err != nil {
		return f, 0, fmt.Errorf("%s init: %w", cfg.Init, err)
	}
	return f, max(rk, rv), nil
}

// calibKV is the calibration KV loss MSE(K,K̂)+MSE(V,V̂) from the Gram matrix.
func calibKV(st *Stats, blk *model.Block, f graph.Factors, mc model.Config, kRank, vRank int) float64 {
	lk, err1 := KVLossGram(st.Gram, st.N, blk.Wk, f.Ak, f.Bk, mc.Hidden, mc.KVDim(), kRank)
	lv, err2 := KVLossGram(st.Gram, st.N, blk.Wv, f.Av, f.Bv, mc.Hidden, mc.KVDim(), vRank)
	if err1 != nil || err2 != nil {
		return math.NaN()
	}
	return lk + lv
}

// ranks resolves the K and V ranks from explicit ranks or densities.
func ranks(mc model.Config, cfg Config) (k, v int, err error) {
	pick := func(rank int, density float64, side string) (int, error) {
		if rank > 0 {
			if rank > mc.KVDim() {
				return 0, fmt.Errorf("--%s-rank %d outside [1, kv_dim %d]", side, rank, mc.KVDim())
			}
			return rank, nil
		}
		r, err := RankFromDensity(density, mc.HeadDim, mc.KVHeads)
		if err != nil {
			return 0, fmt.Errorf("--%s-density: %w", side, err)
		}
		return r, nil
	}
	if k, err = pick(cfg.KRank, cfg.KDensity, "k"); err != nil {
		return
	}
	v, err = pick(cfg.VRank, cfg.VDensity, "v")
	return
}

// openModel opens the model, or the embedded synthetic one for "".
func openModel(path string) (*model.Model, error) {
	if path == "" {
		return model.Synthetic(SyntheticSeed)
	}
	return model.Open(path)
}

// smallHidden is the model width below which BLAS runs single-threaded
// (measured on stories260K: 13–21 vs 2.3–3 CPU-ms per KV step).
const smallHidden = 1024

// SyntheticSeed is the seed of the embedded default model.
const SyntheticSeed = 1

// SyntheticCalibSeed seeds the synthetic model's sampled calibration data.
const SyntheticCalibSeed = 2024

// calibration returns the N calibration sequences and the held-out ones.
func calibration(m *model.Model, cfg Config) (calib, held [][]int, err error) {
	if cfg.Data == "" {
		if m.Format != "synthetic" {
			return nil, nil, fmt.Errorf("--data is required with --model")
		}
		all, err := m.SampleTokens(cfg.CalibChunks+cfg.Holdout, cfg.SeqLen, 1, SyntheticCalibSeed)
		if err != nil {
			return nil, nil, err
		}
		return all[:cfg.CalibChunks], all[cfg.CalibChunks:], nil
	}
	var enc data.Encoder
	if m.Tokenizer != nil {
		enc = m.Tokenizer
	}
	ids, err := data.Load(cfg.Data, data.Format(cfg.DataFormat), enc)
	if err != nil {
		return nil, nil, err
	}
	if err := data.CheckVocab(ids, m.Config.Vocab); err != nil {
		return nil, nil, fmt.Errorf("data %s: %w", cfg.Data, err)
	}
	all, err := data.Chunks(ids, cfg.SeqLen, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("data %s: %w", cfg.Data, err)
	}
	if len(all) < cfg.CalibChunks {
		return nil, nil, fmt.Errorf("data %s: too little calibration data: %d chunks of %d tokens, --calib-chunks %d", cfg.Data, len(all), cfg.SeqLen, cfg.CalibChunks)
	}
	if cfg.RandomPick {
		if calib, err = data.Select(all, cfg.CalibChunks, cfg.Seed); err != nil {
			return nil, nil, err
		}
		return calib, nil, nil // every chunk may be picked: no held-out set
	}
	calib = all[:cfg.CalibChunks]
	rest := all[cfg.CalibChunks:]
	held = rest[:min(cfg.Holdout, len(rest))]
	return calib, held, nil
}

// digestTokens is a sha256 of the calibration token stream.
func digestTokens(seqs [][]int) string {
	h := sha256.New()
	var b [4]byte
	for _, s := range seqs {
		for _, t := range s {
			binary.LittleEndian.PutUint32(b[:], uint32(t))
			h.Write(b[:])
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// exportPath is where the projections go.
func (c Config) exportPath() string {
	if c.Export != "" {
		return c.Export
	}
	return filepath.Join(c.Out, "projections.safetensors")
}

func (e Env) withDefaults() Env {
	if e.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		e.Log = l
	}
	if e.OnStep == nil {
		e.OnStep = func(StepInfo) {}
	}
	if e.OnLayer == nil {
		e.OnLayer = func(LayerInfo) {}
	}
	if e.OnPhase == nil {
		e.OnPhase = func(string, int) {}
	}
	return e
}
