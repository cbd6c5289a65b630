// The allocation driver: measure every layer's rank curves and choose the
// ranks per layer and side under a memory budget (docs/METHOD.md §7).

package train

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/alloc"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/quant"
)

// Allocate measures (cfg.Budget, cfg.Objective, cfg.MaxPoints, cfg.AllocWindow;
// the data, bits, quantisation groups, init and output window as for
// training), for every layer and side, the error of every candidate
// rank and solves the knapsack under the budget. The curves: the closed-form
// KV error from one eigendecomposition per side (alloc.TailCurve) on the
// calibration sequences and, when there are held-out sequences, the output
// term of the init truncated to each rank (the other side kept at full rank
// and full precision) on them. Byte costs are the memory formula's at cfg's
// bits and groups; ranks stay on the grid the groups need.
func Allocate(ctx context.Context, cfg Config, env Env) (*alloc.Plan, error) {
	start := time.Now()
	env = env.withDefaults()
	cfg = cfg.ForAllocation()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !(cfg.Budget > 0) {
		return nil, fmt.Errorf("--budget %g: must be in (0, 1]", cfg.Budget)
	}
	m, err := OpenModel(cfg.Model)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	defer linalg.ThreadsFor(m.Config.Hidden)()
	mc := m.Config
	kvDim := mc.KVDim()
	if kvDim > mc.Hidden {
		return nil, fmt.Errorf("allocation: kv_dim %d above hidden %d is not supported", kvDim, mc.Hidden)
	}
	calib, held, err := calibration(m, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Objective != ObjectiveKV && len(held) == 0 {
		return nil, fmt.Errorf("allocation objective %s needs held-out sequences (--holdout > 0, without --random-chunks)", cfg.Objective)
	}

	plan := &alloc.Plan{Version: alloc.PlanVersion, Model: filepath.Base(m.Path), ModelDigest: m.Digest, Layers: mc.Layers,
		KVDim: kvDim, Budget: cfg.Budget, KBits: cfg.KBits, VBits: cfg.VBits, KQuant: cfg.KQuant.String(), QuantWindow: cfg.QuantWindow,
		Objective: cfg.Objective.String()}
	grids, specs, err := allocGrids(cfg, mc, cfg.MaxPoints)
	if err != nil {
		return nil, err
	}
	var unitSpecs []quant.Spec
	for _, s := range specs {
		unitSpecs = append(unitSpecs, s...)
	}
	plan.UnitTokens = alloc.UnitTokens(unitSpecs...)
	plan.FP16Bytes = alloc.BaselineBytes(mc.Layers, kvDim, plan.UnitTokens)
	if plan.BudgetBytes, err = alloc.BudgetBytes(cfg.Budget, mc.Layers, kvDim, plan.UnitTokens); err != nil {
		return nil, fmt.Errorf("--budget: %w", err)
	}
	env.Log.WithFields(logrus.Fields{"budget": cfg.Budget, "objective": cfg.Objective, "k_grid": len(grids[alloc.K]),
		"v_grid": len(grids[alloc.V]), "held_seqs": len(held)}).Info("allocation started")

	h, hHeld, err := openStreams(cfg, m, calib, held) // (N·T, D), (H·T, D)
	if err != nil {
		return nil, err
	}
	defer h.close()
	defer hHeld.close()
	for l := 0; l < mc.Layers; l++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("allocation interrupted at layer %d: %w", l, err)
		}
		blk, err := m.Block(l)
		if err != nil {
			return nil, err
		}
		env.OnPhase("curves", l)
		curves, err := layerCurves(cfg, mc, blk, l, grids, specs, plan.UnitTokens, h, hHeld)
		if err != nil {
			return nil, fmt.Errorf("allocation: layer %d: %w", l, err)
		}
		plan.Curves = append(plan.Curves, curves...)
		if l < mc.Layers-1 {
			if err := errors.Join(h.advance(mc, blk), hHeld.advance(mc, blk)); err != nil {
				return nil, fmt.Errorf("allocation: layer %d: advance: %w", l, err)
			}
		}
	}
	for i := range plan.Curves {
		c := &plan.Curves[i]
		switch cfg.Objective {
		case ObjectiveKV:
			c.Err = c.KV
		case ObjectiveOut:
			c.Err = c.Out
		case ObjectiveOutResidual:
			c.Err = c.OutResidual
		case ObjectiveOutMixed:
			c.Err = make([]float64, len(c.Out))
			for j := range c.Out {
				c.Err[j] = c.Out[j] + c.OutBi[j]
			}
		}
	}
	if plan.PlanBytes, err = alloc.Choose(plan.Curves, plan.BudgetBytes); err != nil {
		return nil, fmt.Errorf("--budget %g: %w", cfg.Budget, err)
	}
	for l := 0; l < mc.Layers; l++ {
		plan.Ranks = append(plan.Ranks, alloc.LayerRanks{Layer: l, KRank: plan.Curves[2*l].Rank, VRank: plan.Curves[2*l+1].Rank})
	}
	plan.Seconds = time.Since(start).Seconds()
	env.Log.WithFields(logrus.Fields{"plan_fraction": fmt.Sprintf("%.4f", plan.Fraction()),
		"seconds": fmt.Sprintf("%.1f", plan.Seconds)}).Info("allocation finished")
	return plan, nil
}

// allocGrids returns per side the candidate ranks and their quantisation
// specs: every rank when the side's groups allow it (fp16, per-channel keys),
// multiples of the kv head count for per-token groups.
func allocGrids(cfg Config, mc model.Config, maxPoints int) (grids [2][]int, specs [2][]quant.Spec, err error) {
	kvDim := mc.KVDim()
	steps := [2]int{1, 1}
	if cfg.KBits != quant.Off && cfg.KQuant == KeyPerToken {
		steps[alloc.K] = mc.KVHeads
	}
	if cfg.VBits != quant.Off {
		steps[alloc.V] = mc.KVHeads
	}
	for s := range steps {
		if grids[s], err = alloc.Grid(kvDim, steps[s], maxPoints); err != nil {
			return grids, specs, err
		}
		for _, r := range grids[s] {
			rk, rv := r, kvDim // the other side at full rank: always on its grid
			if alloc.Side(s) == alloc.V {
				rk, rv = kvDim, r
			}
			k, v, err := cfg.quant().Specs(rk, rv, mc.KVHeads)
			if err != nil {
				return grids, specs, fmt.Errorf("allocation: rank %d: %w", r, err)
			}
			specs[s] = append(specs[s], [2]quant.Spec{k, v}[s])
		}
	}
	return grids, specs, nil
}

// layerCurves measures layer l's two curves.
func layerCurves(cfg Config, mc model.Config, blk *model.Block, l int, grids [2][]int, specs [2][]quant.Spec,
	unit int, h, hHeld *stream) ([]alloc.Curve, error) {
	kvDim, d := mc.KVDim(), mc.Hidden
	st, err := NewStats(d, true)
	if err != nil {
		return nil, err
	}
	if _, _, err := (layerJob{mc: mc, blk: blk, h: h}).capture(st, false); err != nil {
		return nil, err
	}
	weights := [2][]float32{blk.Wk, blk.Wv}
	var curves []alloc.Curve
	for s := range weights {
		tail, err := alloc.TailCurve(weights[s], st.Gram, kvDim, d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", alloc.Side(s), err)
		}
		c := alloc.Curve{Layer: l, Side: alloc.Side(s), Ranks: grids[s]}
		for j, r := range grids[s] {
			c.Bytes = append(c.Bytes, alloc.SideBytes(mc.KVHeads, mc.HeadDim, r, specs[s][j], unit))
			rel := 0.0
			if tail[0] > 0 {
				rel = tail[r] / tail[0]
			}
			c.KV = append(c.KV, rel)
		}
		curves = append(curves, c)
	}
	if hHeld.nSeq == 0 {
		return curves, nil
	}
	// The output term: the init at full rank, truncated to each candidate
	// rank (every init keeps the leading singular directions of one SVD).
	full, _, err := layerJob{cfg: cfg, mc: mc, blk: blk, l: l, kRank: kvDim, vRank: kvDim}.initFactors(st)
	if err != nil {
		return nil, err
	}
	st = nil
	xHeld, err := hHeld.attnInput(mc, blk) // (H·T, D)
	if err != nil {
		return nil, err
	}
	var res float64 // mean square of the residual stream entering the layer
	err = hHeld.scan(mc, nil, func(_ int, v, _ []float32) error {
		for _, x := range v {
			res += float64(x) * float64(x)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res /= float64(hHeld.rows() * d)
	for s := range curves {
		c := &curves[s]
		for _, r := range c.Ranks {
			f := full
			kRank, vRank := kvDim, kvDim
			q := cfg
			q.OutWindow = 0 // the out curves are all-compressed whatever the training's window (out-mixed adds AllocWindow)
			if alloc.Side(s) == alloc.K {
				kRank, q.VBits = r, quant.Off
				f.Ak, f.Bk = truncate(full.Ak, full.Bk, kvDim, d, r)
			} else {
				vRank, q.KBits = r, quant.Off
				f.Av, f.Bv = truncate(full.Av, full.Bv, kvDim, d, r)
			}
			f.KRank, f.VRank = kRank, vRank
			j := layerJob{cfg: q, mc: mc, blk: blk, l: l, kRank: kRank, vRank: vRank}
			loss, err := j.heldOutOn(f, xHeld)
			if err != nil {
				return nil, fmt.Errorf("%s rank %d: %w", c.Side, r, err)
			}
			c.Out = append(c.Out, loss.OutRel)
			c.OutResidual = append(c.OutResidual, loss.Out/res)
			if cfg.Objective == ObjectiveOutMixed {
				j.cfg.OutWindow = cfg.AllocWindow
				bi, err := j.heldOutOn(f, xHeld)
				if err != nil {
					return nil, fmt.Errorf("%s rank %d: %w", c.Side, r, err)
				}
				c.OutBi = append(c.OutBi, bi.OutRel)
			}
		}
	}
	return curves, nil
}

// truncate keeps the first r of the full-rank factors A (kv, D) and
// B (kv, kv): A's first r rows (r, D) and B's first r columns (kv, r).
func truncate(A, B []float32, kv, d, r int) (a, b []float32) {
	a = append([]float32(nil), A[:r*d]...)
	b = make([]float32, kv*r)
	for i := 0; i < kv; i++ {
		copy(b[i*r:(i+1)*r], B[i*kv:i*kv+r])
	}
	return a, b
}

// ForAllocation is c as an allocation reads it: with no training steps, so
// that the training flags' rules (--batch no larger than the calibration
// sequences) do not refuse a command that trains nothing.
func (c Config) ForAllocation() Config {
	c.Steps = 0
	return c
}
