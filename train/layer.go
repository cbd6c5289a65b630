package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model"
)

// trainLayer initialises one layer's factors from its captured inputs and
// trains them, resuming from the run's checkpoint state when it is for l.
func trainLayer(ctx context.Context, cfg Config, env Env, run *runState, mc model.Config, blk *model.Block,
	l, kRank, vRank int, x, xHeld []float32) (LayerInfo, kv.Factors, error) {
	t0 := time.Now()
	info := LayerInfo{Layer: l, KRank: kRank, VRank: vRank, Init: cfg.Init}
	stats, err := NewStats(mc.Hidden, cfg.Init == "whiten" || mc.Hidden <= 1024)
	if err != nil {
		return info, kv.Factors{}, err
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
	// The K and V targets of every sequence do not change between steps:
	// compute them once when they fit targetBudget, and gather them with
	// the batch (nil otherwise: the graph computes each batch's).
	kAll, vAll := targets(mc, blk, x, nSeq*T) // (N·T, KV) each, or nil
	var kb, vb []float32                      // (Batch·T, KV)
	if kAll != nil {
		kb, vb = make([]float32, cfg.Batch*T*mc.KVDim()), make([]float32, cfg.Batch*T*mc.KVDim())
	}
	params := layer.Params()
	for step := startStep; step < cfg.Steps; step++ {
		if err := ctx.Err(); err != nil {
			cur := layer.Factors()
			if serr := run.save(l, step, &cur, adam, rng, info); serr != nil {
				return info, f, errors.Join(err, serr)
			}
			return info, f, fmt.Errorf("interrupted at step %d (checkpoint written): %w", step, err)
		}
		for i, seq := range pickBatch(nSeq, cfg.Batch, rng) {
			copy(batch[i*T*D:(i+1)*T*D], x[seq*T*D:(seq+1)*T*D])
			if kAll != nil {
				n := T * mc.KVDim()
				copy(kb[i*n:(i+1)*n], kAll[seq*n:(seq+1)*n])
				copy(vb[i*n:(i+1)*n], vAll[seq*n:(seq+1)*n])
			}
		}
		loss, err := layer.RunTargets(batch, kb, vb)
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
func heldOut(cfg Config, mc model.Config, blk *model.Block, kRank, vRank int, f kv.Factors, xHeld []float32) (*graph.Loss, error) {
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

// pickBatch draws `batch` distinct sequence indices out of nSeq with rng
// (a partial Fisher–Yates shuffle).
func pickBatch(nSeq, batch int, rng *rand.PCG) []int {
	r := rand.New(rng)
	idx := make([]int, nSeq)
	for i := range idx {
		idx[i] = i
	}
	for i := 0; i < batch; i++ {
		j := i + r.IntN(nSeq-i)
		idx[i], idx[j] = idx[j], idx[i]
	}
	return idx[:batch]
}

// targetBudget bounds the memory of the precomputed K and V targets.
const targetBudget = 1 << 30

// targets returns K = X·Wkᵀ + bk and V = X·Wvᵀ + bv for all n rows of x, or
// nil when they would exceed targetBudget.
func targets(mc model.Config, blk *model.Block, x []float32, n int) (k, v []float32) {
	if int64(n)*int64(mc.KVDim())*8 > targetBudget {
		return nil, nil
	}
	k, v = make([]float32, n*mc.KVDim()), make([]float32, n*mc.KVDim())
	model.Linear(k, x, blk.Wk, blk.Bk, n, mc.KVDim(), mc.Hidden)
	model.Linear(v, x, blk.Wv, blk.Bv, n, mc.KVDim(), mc.Hidden)
	return k, v
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
	mode := kv.WindowBlock
	if cfg.Window == "sliding" {
		mode = kv.WindowSliding
	}
	return graph.LayerSpec{
		Hidden: mc.Hidden, NHeads: mc.Heads, NKVHeads: mc.KVHeads, HeadDim: mc.HeadDim, RopeBase: mc.RopeBase,
		Wq: blk.Wq, Wk: blk.Wk, Wv: blk.Wv, Wo: blk.Wo, Bq: blk.Bq, Bk: blk.Bk, Bv: blk.Bv,
		KRank: kRank, VRank: vRank, Seqs: seqs, Tokens: cfg.SeqLen,
		OutSeqs: min(cfg.OutSeqs, seqs), LambdaKV: cfg.LambdaKV, LambdaOut: cfg.LambdaOut,
		OutWindow: cfg.OutWindow, WindowMode: mode,
		Quant: kv.Quant{KBits: cfg.KBits, VBits: cfg.VBits, KPerChannel: cfg.KQuant == "channel",
			QuantWindow: cfg.QuantWindow, ClampZero: cfg.QuantZero == "clamp"},
	}
}

// initFactors runs the configured initialisation for K and V.
func initFactors(cfg Config, mc model.Config, blk *model.Block, st *Stats, kRank, vRank int) (kv.Factors, float64, error) {
	f := kv.Factors{KRank: kRank, VRank: vRank}
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
func calibKV(st *Stats, blk *model.Block, f kv.Factors, mc model.Config, kRank, vRank int) float64 {
	lk, err1 := KVLossGram(st.Gram, st.N, blk.Wk, f.Ak, f.Bk, mc.Hidden, mc.KVDim(), kRank)
	lv, err2 := KVLossGram(st.Gram, st.N, blk.Wv, f.Av, f.Bv, mc.Hidden, mc.KVDim(), vRank)
	if err1 != nil || err2 != nil {
		return math.NaN()
	}
	return lk + lv
}
