package train

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/alloc"
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
	Init         Init        `json:"init"`
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

// Result is what a finished run produced. The model is closed when Run
// returns.
type Result struct {
	Config      Config      // as run (Config.Model names the model to reopen)
	Layers      []LayerInfo // every layer's report, in order
	Projections string      // exported file
	Plan        *alloc.Plan // the allocation, with --budget or --plan (nil otherwise)
	PeakRSS     int64       // bytes, from /proc (0 where unknown)
	Seconds     float64
}

// Run is the spine of cskv: open the model, cut the calibration sequences,
// then for every layer capture its attention inputs, initialise the factors,
// train them, checkpoint, and advance the hidden states with the original
// layer; finally export the projections.
func Run(ctx context.Context, cfg Config, env Env) (*Result, error) {
	start := time.Now()
	env = env.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	unlock, err := lockRun(cfg) // held until Run returns
	if err != nil {
		return nil, err
	}
	defer unlock()
	m, closeModel, err := cfg.open()
	if err != nil {
		return nil, err
	}
	defer closeModel()
	if w := linalg.SlowBackend(m.Config.Hidden); w != "" {
		env.Log.Warn(w)
	}
	calib, held, err := calibration(m, cfg)
	if err != nil {
		return nil, err
	}
	if w := cfg.idleOutWindows(); len(w) > 0 {
		env.Log.WithFields(logrus.Fields{"windows": w, "seq_len": cfg.SeqLen, "lambda_kv": cfg.LambdaKV}).
			Warn("the output term's bi-branch window covers every token of a sequence: its attention reads only original keys, so the term is zero at that window (with --lambda-kv 0 nothing trains); lower --out-window / --out-window-alt below --seq-len")
	}
	if cfg.SeqLen > m.Config.ContextLength {
		env.Log.WithFields(logrus.Fields{"seq_len": cfg.SeqLen, "context_length": m.Config.ContextLength}).Warn("sequences are longer than the model's trained context")
	}
	first, last, err := cfg.layerRange(m.Config.Layers)
	if err != nil {
		return nil, err
	}
	kRanks, vRanks, plan, err := layerRanks(ctx, m.Config, cfg, env)
	if err != nil {
		return nil, err
	}
	run, err := openRun(cfg, m, calib, kRanks, vRanks, env.Log)
	if err != nil {
		return nil, err
	}
	env.Log.WithFields(logrus.Fields{"model": m.Path, "layers": m.Config.Layers, "calib_seqs": len(calib),
		"seq_len": cfg.SeqLen, "k_ranks": kRanks, "v_ranks": vRanks, "init": cfg.Init, "steps": cfg.Steps}).Info("run started")

	mem := EstimateMemory(cfg, m.Config, slices.Max(kRanks), slices.Max(vRanks))
	env.Log.WithFields(logrus.Fields{"total_mib": mem.Total >> 20, "streams_mib": mem.Streams >> 20, "spilled": mem.Spilled,
		"layer_mib": mem.Layer >> 20, "graph_mib": mem.Graph >> 20, "advance_mib": mem.Advance >> 20}).Info("peak memory formula (README)")
	if machine := memTotal(); mem.exceeds(machine) {
		env.Log.WithFields(logrus.Fields{"formula_mib": mem.Total >> 20, "machine_mib": machine >> 20, "graph_mib": mem.Graph >> 20}).
			Warn("the peak memory formula exceeds this machine's memory: the run may be killed; lower --batch or --out-seqs (the training graph grows with them), or --holdout")
	}
	h, hHeld, from, err := startStreams(cfg, m, calib, held, first)
	if err != nil {
		return nil, err
	}
	defer h.close()
	defer hHeld.close()
	if h.spilled() {
		env.Log.WithFields(logrus.Fields{"dir": filepath.Dir(h.file.Name()), "mib": streamBytes(len(calib)+len(held), cfg.SeqLen, m.Config.Hidden) >> 20}).Info("residual streams spilled to files (unlinked: gone when the run ends)")
	}
	for l := from; l < last; l++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("interrupted before layer %d (checkpoints hold every finished layer): %w", l, err)
		}
		blk, err := m.Block(l)
		if err != nil {
			return nil, err
		}
		if l >= run.next() { // layers before the checkpoint's are already done, those before first another shard's
			collect()
			env.OnPhase("capture", l)
			j := layerJob{cfg: cfg, mc: m.Config, blk: blk, l: l, kRank: kRanks[l], vRank: vRanks[l], h: h, hHeld: hHeld}
			d, err := trainLayer(ctx, j, env, run)
			if err != nil {
				return nil, fmt.Errorf("layer %d: %w", l, err)
			}
			if err := run.finish(d); err != nil {
				return nil, err
			}
			env.OnLayer(d.Info)
		}
		if l == last-1 {
			break // nothing reads the last layer's output
		}
		collect()
		env.OnPhase("advance", l)
		if err := errors.Join(h.advance(m.Config, blk), hHeld.advance(m.Config, blk)); err != nil {
			return nil, fmt.Errorf("layer %d: advance: %w", l, err)
		}
	}
	res := &Result{Config: cfg, Plan: plan}
	if first == 0 && last == m.Config.Layers { // a shard exports nothing: Merge does
		if res.Projections, err = export(cfg, m, run.done, kRanks, vRanks, plan); err != nil {
			return nil, err
		}
	}
	for _, d := range run.done {
		res.Layers = append(res.Layers, d.Info)
	}
	res.PeakRSS = PeakRSS()
	res.Seconds = time.Since(start).Seconds()
	env.Log.WithFields(logrus.Fields{"projections": res.Projections, "seconds": fmt.Sprintf("%.1f", res.Seconds),
		"peak_rss_mib": res.PeakRSS >> 20}).Info("run finished")
	return res, nil
}

// layerRanks resolves every layer's K and V ranks: from the plan file
// (--plan), from an allocation under --budget run first, or the same for
// every layer from explicit ranks or densities.
func layerRanks(ctx context.Context, mc model.Config, cfg Config, env Env) (k, v []int, plan *alloc.Plan, err error) {
	switch {
	case cfg.Plan != "":
		if plan, err = alloc.ReadPlan(cfg.Plan); err != nil {
			return nil, nil, nil, err
		}
		if err := plan.Check(mc.Layers, mc.KVDim()); err != nil {
			return nil, nil, nil, fmt.Errorf("--plan %s: %w", cfg.Plan, err)
		}
	case cfg.Budget > 0:
		env.OnPhase("allocate", 0)
		if plan, err = Allocate(ctx, cfg, env); err != nil {
			return nil, nil, nil, err
		}
	default:
		kr, vr, err := ranks(mc, cfg)
		if err != nil {
			return nil, nil, nil, err
		}
		for l := 0; l < mc.Layers; l++ {
			k, v = append(k, kr), append(v, vr)
		}
		return k, v, nil, nil
	}
	return plan.KRanks(), plan.VRanks(), plan, nil
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

// OpenModel opens the model at path, builds the embedded synthetic model
// (seed SyntheticSeed) when path is empty, or, for "shape:NAME[:LAYERS]"
// (model.OpenShape), random weights in the shape of a known architecture
// (memory and speed measurements at 7B sizes).
func OpenModel(path string) (*model.Model, error) {
	switch {
	case path == "":
		return model.Synthetic(SyntheticSeed)
	case strings.HasPrefix(path, model.ShapePrefix):
		return model.OpenShape(path)
	}
	return model.Open(path)
}

// SyntheticSeed is the seed of the embedded default model.
const SyntheticSeed = 1

// calibration returns the N calibration sequences and the held-out ones.
func calibration(m *model.Model, cfg Config) (calib, held [][]int, err error) {
	src := data.Source{Path: cfg.Data, Format: cfg.DataFormat, SeqLen: cfg.SeqLen,
		Seed: data.SyntheticCalibSeed, Samples: cfg.CalibChunks + cfg.Holdout}
	all, err := src.Chunks(m, 0)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Data == "" { // sampled: exactly N + H sequences, always the first N
		return all[:cfg.CalibChunks], all[cfg.CalibChunks:], nil
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
