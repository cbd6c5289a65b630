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

// layerJob is one layer's fixed inputs: the run's settings, the model's
// shape, the frozen block, the ranks and the residual streams entering the
// layer, from which its attention inputs X = RMSNorm(h) are computed where
// they are needed (a streaming pass for the statistics and the targets, a
// batch per step, the held-out sequences), never for all N·T rows at once.
type layerJob struct {
	cfg          Config
	mc           model.Config
	blk          *model.Block
	l            int // the layer's index
	kRank, vRank int
	h            *stream // (N·T, D) the calibration sequences
	hHeld        *stream // (H·T, D) the held-out sequences (nSeq 0: none)
}

// trainLayer initialises layer j.l's factors from its captured inputs, or
// takes the state a mid-layer checkpoint saved, trains them and measures
// them on the held-out sequences.
func trainLayer(ctx context.Context, j layerJob, env Env, run *runState) (doneLayer, error) {
	t0 := time.Now()
	stats, err := NewStats(j.mc.Hidden, j.cfg.Init == WhitenInit || j.mc.Hidden <= 1024)
	if err != nil {
		return doneLayer{}, err
	}
	kAll, vAll, err := j.capture(stats, j.cfg.Steps > 0)
	if err != nil {
		return doneLayer{}, err
	}
	st := run.resumed(j.l)
	if st != nil {
		env.Log.WithFields(logrus.Fields{"layer": j.l, "step": st.Step}).Info("resuming layer")
	} else {
		collect()
		env.OnPhase("init", j.l)
		if st, err = j.init(stats, env.Log); err != nil {
			return doneLayer{}, err
		}
	}
	if j.cfg.Steps == 0 { // initialisation only
		if j.hHeld.nSeq > 0 {
			if st.Info.HeldBefore, err = j.heldOut(st.Factors); err != nil {
				return doneLayer{}, err
			}
		}
		st.Info.Seconds = time.Since(t0).Seconds()
		return doneLayer{Factors: st.Factors, Info: st.Info}, nil
	}
	f, err := j.train(ctx, env, run, st, kAll, vAll)
	if err != nil {
		return doneLayer{}, err
	}
	d := doneLayer{Factors: f, Info: st.Info}
	if j.hHeld.nSeq > 0 {
		if d.Info.HeldAfter, err = j.heldOut(d.Factors); err != nil {
			return doneLayer{}, err
		}
	}
	if stats.Gram != nil {
		d.Info.CalibKVFinal = j.calibKV(stats, d.Factors)
	}
	d.Info.Seconds = time.Since(t0).Seconds()
	fields := logrus.Fields{"layer": j.l, "seconds": fmt.Sprintf("%.1f", d.Info.Seconds)}
	if b, a := d.Info.HeldBefore, d.Info.HeldAfter; b != nil && a != nil {
		fields["held_k_rel"] = fmt.Sprintf("%.4f→%.4f", b.KRel, a.KRel)
		fields["held_v_rel"] = fmt.Sprintf("%.4f→%.4f", b.VRel, a.VRel)
		fields["held_out_rel"] = fmt.Sprintf("%.4f→%.4f", b.OutRel, a.OutRel)
	}
	env.Log.WithFields(fields).Info("layer done")
	return d, nil
}

// train takes Adam steps st.Step … Steps−1 from st (measuring the held-out
// losses first when it starts the layer) and returns the trained factors;
// kAll, vAll are the precomputed targets (nil: the graph computes each
// batch's). st is the layer's live state: checkpoints save it as it goes.
func (j layerJob) train(ctx context.Context, env Env, run *runState, st *layerState, kAll, vAll []float32) (kv.Factors, error) {
	var err error
	if j.hHeld.nSeq > 0 && st.Step == 0 { // before the training graph exists: one graph at a time
		if st.Info.HeldBefore, err = j.heldOut(st.Factors); err != nil {
			return kv.Factors{}, err
		}
	}
	collect()
	layer, err := graph.NewLayer(j.spec(j.cfg.Batch), st.Factors)
	if err != nil {
		return kv.Factors{}, err
	}
	defer layer.Close()
	// With --out-window-alt the output term of all but the first of every
	// 1 + --out-window-alt-steps steps reads the other bi-branch window
	// (docs/METHOD.md §3): the graph switches its attention's window.
	windows := layer.Spec().OutWindows() // W, then W′ when on
	if len(windows) > 1 {
		for range max(j.cfg.OutWindowAltSteps, 1) - 1 {
			windows = append(windows, windows[1])
		}
	}
	if st.Adam == nil {
		st.Adam = NewAdam(sizes(layer.Params()))
	}
	env.OnPhase("train", j.l)
	batch := newBatcher(j, kAll, vAll)
	params := layer.Params() // Ak, Bk, Av, Bv: live values and gradients
	for st.Step < j.cfg.Steps {
		if err := ctx.Err(); err != nil {
			return kv.Factors{}, interrupted(run, st, layer, err)
		}
		if err := layer.SetOutWindow(windows[st.Step%len(windows)]); err != nil {
			return kv.Factors{}, err
		}
		if err := batch.next(st.RNG); err != nil {
			return kv.Factors{}, fmt.Errorf("step %d: %w", st.Step+1, err)
		}
		loss, err := layer.RunTargets(batch.x, batch.k, batch.v) // forward and backward
		if err := checkStep(loss, params, err); err != nil {
			return kv.Factors{}, fmt.Errorf("step %d: %w", st.Step+1, err)
		}
		lr := j.cfg.LRAt(st.Step, j.cfg.Steps)
		st.Adam.Step(params, lr)
		st.Step++
		if err := j.report(env, run, st, layer, loss, lr); err != nil {
			return kv.Factors{}, err
		}
	}
	return layer.Factors(), nil
}

// init is the layer's state before training: the initialised factors, a
// fresh batch sampler and the report's initialisation fields.
func (j layerJob) init(stats *Stats, log logrus.FieldLogger) (*layerState, error) {
	info := LayerInfo{Layer: j.l, KRank: j.kRank, VRank: j.vRank, Init: j.cfg.Init}
	f, ridge, err := j.initFactors(stats)
	if err != nil {
		return nil, err
	}
	info.Ridge = ridge
	if ridge > 0 {
		log.WithFields(logrus.Fields{"layer": j.l, "ridge": ridge}).Info("whitening ridge added to XᵀX")
	}
	if stats.Gram != nil {
		info.CalibKVInit = j.calibKV(stats, f)
	}
	return &layerState{Factors: f, RNG: rand.NewPCG(j.cfg.Seed, uint64(j.l)+1), Info: info}, nil
}

// report records step st.Step's loss in the layer's curves, hands it to
// Env.OnStep, and checkpoints every SaveEvery steps (not at the layer's last
// step: the layer boundary's checkpoint follows).
func (j layerJob) report(env Env, run *runState, st *layerState, layer *graph.Layer, loss graph.Loss, lr float64) error {
	st.Info.CurveKV = append(st.Info.CurveKV, loss.KV)
	st.Info.CurveOut = append(st.Info.CurveOut, loss.Out)
	env.OnStep(StepInfo{Layer: j.l, Layers: j.mc.Layers, Step: st.Step, Steps: j.cfg.Steps, LR: lr, Loss: loss})
	if j.cfg.SaveEvery == 0 || st.Step%j.cfg.SaveEvery != 0 || st.Step == j.cfg.Steps {
		return nil
	}
	st.Factors = layer.Factors()
	return run.save(st)
}

// interrupted checkpoints st after a cancelled ctx (cause) and says so.
func interrupted(run *runState, st *layerState, layer *graph.Layer, cause error) error {
	st.Factors = layer.Factors()
	if err := run.save(st); err != nil {
		return errors.Join(cause, err)
	}
	return fmt.Errorf("interrupted at step %d (checkpoint written): %w", st.Step, cause)
}

// heldOut evaluates factors f on the held-out sequences (all of them in both
// terms, whatever the training weights).
func (j layerJob) heldOut(f kv.Factors) (*graph.Loss, error) {
	xHeld, err := j.hHeld.attnInput(j.mc, j.blk) // (H·T, D)
	if err != nil {
		return nil, fmt.Errorf("held-out evaluation: %w", err)
	}
	return j.heldOutOn(f, xHeld)
}

// heldOutOn is heldOut on the held-out attention inputs xHeld (H·T, D).
func (j layerJob) heldOutOn(f kv.Factors, xHeld []float32) (*graph.Loss, error) {
	n := len(xHeld) / (j.cfg.SeqLen * j.mc.Hidden)
	spec := j.spec(n)
	spec.OutSeqs, spec.LambdaKV, spec.LambdaOut = n, 1, 1
	collect()
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

// batcher gathers training batches: Batch calibration sequences' attention
// inputs, computed from the stream, and, when they were precomputed, their
// K and V targets.
type batcher struct {
	x, k, v     []float32 // the batch: (Batch·T, D), (Batch·T, KV) each (k, v nil: the graph computes them)
	kAll, vAll  []float32 // every sequence's targets: (N·T, KV) each, or nil
	j           layerJob
	size        int // Batch sequences per batch
	rowX, rowKV int // floats per sequence: T·D, T·KV
}

func newBatcher(j layerJob, kAll, vAll []float32) *batcher {
	T, D, KV := j.cfg.SeqLen, j.mc.Hidden, j.mc.KVDim()
	b := &batcher{kAll: kAll, vAll: vAll, j: j, size: j.cfg.Batch, rowX: T * D, rowKV: T * KV}
	b.x = make([]float32, b.size*b.rowX)
	if b.kAll != nil {
		b.k, b.v = make([]float32, b.size*b.rowKV), make([]float32, b.size*b.rowKV)
	}
	return b
}

// next draws the next batch with rng.
func (b *batcher) next(rng *rand.PCG) error {
	for i, s := range pickBatch(b.j.h.nSeq, b.size, rng) {
		if err := b.j.h.seqInput(b.j.mc, b.j.blk, b.x[i*b.rowX:(i+1)*b.rowX], s); err != nil {
			return err
		}
		if b.kAll != nil {
			copy(b.k[i*b.rowKV:(i+1)*b.rowKV], b.kAll[s*b.rowKV:(s+1)*b.rowKV])
			copy(b.v[i*b.rowKV:(i+1)*b.rowKV], b.vAll[s*b.rowKV:(s+1)*b.rowKV])
		}
	}
	return nil
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

// capture is the layer's one streaming pass over the calibration stream: it
// accumulates the statistics the init needs into stats and, with targets
// set and when they fit targetBudget, computes the K and V targets
// K = X·Wkᵀ + bk, V = X·Wvᵀ + bv (N·T, KV) of every row (nil otherwise: the
// graph computes each batch's).
func (j layerJob) capture(stats *Stats, targets bool) (k, v []float32, err error) {
	n, D, KV := j.h.rows(), j.mc.Hidden, j.mc.KVDim()
	if targets && int64(n)*int64(KV)*8 <= targetBudget {
		k, v = make([]float32, n*KV), make([]float32, n*KV)
	}
	err = j.h.scan(j.mc, j.blk, func(r0 int, _, x []float32) error {
		rows := len(x) / D
		if err := stats.addUpper(x); err != nil {
			return fmt.Errorf("rows from %d: %w", r0, err)
		}
		if k != nil {
			model.Linear(k[r0*KV:(r0+rows)*KV], x, j.blk.Wk, j.blk.Bk, rows, KV, D)
			model.Linear(v[r0*KV:(r0+rows)*KV], x, j.blk.Wv, j.blk.Bv, rows, KV, D)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("capture: %w", err)
	}
	stats.mirror()
	return k, v, nil
}

// checkStep passes on a failed step's error and refuses a non-finite loss
// or gradient.
func checkStep(loss graph.Loss, ps []graph.Param, err error) error {
	if err != nil {
		return err
	}
	if math.IsNaN(loss.Total) || math.IsInf(loss.Total, 0) || !finiteGrads(ps) {
		return fmt.Errorf("non-finite loss or gradients (loss %g); the last good checkpoint is kept", loss.Total)
	}
	return nil
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

// sizes returns the parameters' lengths.
func sizes(ps []graph.Param) []int {
	n := make([]int, len(ps))
	for i, p := range ps {
		n[i] = len(p.Value)
	}
	return n
}

// spec describes the layer's objective over seqs sequences for the graph.
func (j layerJob) spec(seqs int) graph.LayerSpec {
	cfg, mc, blk := j.cfg, j.mc, j.blk
	return graph.LayerSpec{
		Hidden: mc.Hidden, Attn: blk.Attn,
		Wq: blk.Wq, Wk: blk.Wk, Wv: blk.Wv, Wo: blk.Wo, Bq: blk.Bq, Bk: blk.Bk, Bv: blk.Bv,
		KRank: j.kRank, VRank: j.vRank, Seqs: seqs, Tokens: cfg.SeqLen,
		OutSeqs: min(cfg.OutSeqs, seqs), LambdaKV: cfg.LambdaKV, LambdaOut: cfg.LambdaOut,
		OutWindow: cfg.OutWindow, OutWindowAlt: cfg.OutWindowAlt, WindowMode: cfg.Window,
		Quant: cfg.quant(),
	}
}

// initFactors runs the configured initialisation for K and V; the float is
// the whitening ridge used (0 for the other inits).
func (j layerJob) initFactors(st *Stats) (kv.Factors, float64, error) {
	cfg, mc, blk, kRank, vRank := j.cfg, j.mc, j.blk, j.kRank, j.vRank
	f := kv.Factors{KRank: kRank, VRank: vRank}
	var err error
	var rk, rv float64
	kvDim, d := mc.KVDim(), mc.Hidden
	switch cfg.Init {
	case SVDInit:
		if f.Ak, f.Bk, err = InitSVD(blk.Wk, kvDim, d, kRank); err == nil {
			f.Av, f.Bv, err = InitSVD(blk.Wv, kvDim, d, vRank)
		}
	case ASVDInit:
		mean := st.MeanAbs()
		if f.Ak, f.Bk, err = InitASVD(blk.Wk, kvDim, d, kRank, mean, cfg.Alpha); err == nil {
			f.Av, f.Bv, err = InitASVD(blk.Wv, kvDim, d, vRank, mean, cfg.Alpha)
		}
	case WhitenInit:
		if f.Ak, f.Bk, rk, err = InitWhiten(blk.Wk, kvDim, d, kRank, st.Gram, cfg.Ridge); err == nil {
			f.Av, f.Bv, rv, err = InitWhiten(blk.Wv, kvDim, d, vRank, st.Gram, cfg.Ridge)
		}
	default:
		err = fmt.Errorf("unknown initialisation %d", int(cfg.Init))
	}
	if err != nil {
		return f, 0, fmt.Errorf("%s init: %w", cfg.Init, err)
	}
	return f, max(rk, rv), nil
}

// calibKV is the calibration KV loss MSE(K,K̂)+MSE(V,V̂) from the Gram matrix.
func (j layerJob) calibKV(st *Stats, f kv.Factors) float64 {
	lk, err1 := KVLossGram(st.Gram, st.N, j.blk.Wk, f.Ak, f.Bk, j.mc.Hidden, j.mc.KVDim(), j.kRank)
	lv, err2 := KVLossGram(st.Gram, st.N, j.blk.Wv, f.Av, f.Bv, j.mc.Hidden, j.mc.KVDim(), j.vRank)
	if err1 != nil || err2 != nil {
		return math.NaN()
	}
	return lk + lv
}
