// Package bench times training steps and the frozen forward at reference
// layer shapes and states each as a fraction of the machine's matrix-product
// peak measured in the same run (`cskv bench` is its front end).
package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// Row is one timed configuration.
type Row struct {
	Shape     string  `json:"shape"`
	Hidden    int     `json:"hidden"`
	KVDim     int     `json:"kv_dim"`
	Rank      int     `json:"rank"`
	Tokens    int     `json:"tokens_per_step"`
	Loss      string  `json:"loss"`                              // "kv", "kv+out", or "forward" (the frozen layer, no training)
	MsPerStep float64 `json:"ms_per_step"`                       // targets recomputed each step (Run); the forward's time
	MsPrecomp float64 `json:"ms_per_step_precomputed,omitempty"` // targets of the batch reused (Rerun)
	TokensPS  float64 `json:"tokens_per_s"`
	GFLOP     float64 `json:"gflop_per_step"` // the products counted (see KVFLOPs, OutFLOPs, ForwardFLOPs)
	GFLOPs    float64 `json:"gflops"`         // GFLOP / (ms_per_step / 1000)
	Fraction  float64 `json:"peak_fraction"`  // GFLOPs / the peak of Precision measured in this run
	// The step with the targets precomputed: GFLOP less the K and V target
	// products it does not run, and its fraction of the peak.
	GFLOPPrecomp    float64 `json:"gflop_per_step_precomputed,omitempty"`
	FractionPrecomp float64 `json:"peak_fraction_precomputed,omitempty"`
	// Every matrix product the timed steps (targets recomputed) ran, counted
	// or not, over the time spent in them (linalg.ProductStats.Busy): how
	// close the products alone come to the peak.
	ProductGFLOPs   float64 `json:"product_gflops,omitempty"`
	ProductFraction float64 `json:"product_peak_fraction,omitempty"`
	// The peak's product timed once before each timed step (Timing.Probe;
	// the median sample) and the three fractions against it: on a machine
	// whose speed moves with other work, the step and this peak see the
	// same conditions.
	PeakAdjacent            float64 `json:"peak_gflops_adjacent,omitempty"`
	FractionAdjacent        float64 `json:"peak_fraction_adjacent,omitempty"`
	FractionPrecompAdjacent float64 `json:"peak_fraction_precomputed_adjacent,omitempty"`
	ProductFractionAdjacent float64 `json:"product_peak_fraction_adjacent,omitempty"`
	Precision               string  `json:"precision"`
	Threads                 int     `json:"blas_threads"`
	Backend                 string  `json:"backend"`

	products linalg.ProductStats // of the timed steps (setProducts)
}

// Peaks measures the matrix-product peak of F32 and, where the CPU has
// native bf16 and the build oneDNN, BF16: for each, the fastest of shapes
// (linalg.PeakShapes for the reference layers) and, for the precision in
// use, of own too (the heavy products of the timed rows, Suite), seconds
// per shape and candidate.
func Peaks(ctx context.Context, shapes, own [][3]int, seconds float64) ([]linalg.PeakResult, error) {
	precs := []linalg.Precision{linalg.F32}
	if linalg.NativeBF16() && linalg.HasBF16() {
		precs = append(precs, linalg.BF16)
	}
	var out []linalg.PeakResult
	for _, p := range precs {
		var best linalg.PeakResult
		all := shapes
		if p == linalg.CurrentPrecision() {
			all = append(slices.Clone(shapes), own...)
		}
		for _, sh := range all {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			r, err := linalg.Peak(p, sh[0], sh[1], sh[2], seconds)
			if err != nil {
				return nil, fmt.Errorf("peak %v: %w", p, err)
			}
			if r.GFLOPs > best.GFLOPs {
				best = r
			}
		}
		out = append(out, best)
	}
	return out, nil
}

// TargetFLOPs counts the K and V target products X·Wkᵀ and X·Wvᵀ of one
// step (part of KVFLOPs), which a step with the targets precomputed does
// not run.
func TargetFLOPs(s graph.BenchShape) float64 {
	return 2 * 2 * float64(s.Seqs*s.Tokens) * float64(s.Hidden) * float64(s.KVDim())
}

// KVFLOPs counts the arithmetic of one KV-loss training step: the targets
// X·Wkᵀ and X·Wvᵀ (2·n·D·KV each) and, per side, the features C = X·Aᵀ
// (2·n·D·r), the reconstruction C·Bᵀ (2·n·r·KV) and the backward products
// dB = dK̂ᵀ·C, dC = dK̂·B (2·n·r·KV each) and dA = dCᵀ·X (2·n·D·r). At the
// Llama-3-8B shape that is 81.6 GFLOP.
func KVFLOPs(s graph.BenchShape) float64 {
	n := float64(s.Seqs * s.Tokens)
	d, kv, r := float64(s.Hidden), float64(s.KVDim()), float64(s.Rank)
	return TargetFLOPs(s) + 2*(4*n*d*r+6*n*r*kv)
}

// OutFLOPs counts the products the output term adds on outSeqs sequences of
// T tokens: Q·K̂ᵀ, P·V̂, dP = dO·V̂ᵀ, dV̂ = Pᵀ·dO and dK̂ = dSᵀ·Q over the
// causal half (T²·QD each), o_proj forward and its input gradient
// (2·T·QD·D each). Recomputation inside the attention backward is not
// counted. At the Llama-3-8B shape (one sequence) that is 223 GFLOP. This
// is the fixed count: the graph computes the projection's part as
// one product with the metric Woᵀ·Wo (2·T·QD², package graph), so a step
// runs 2·T·QD·(2·D − QD) fewer of these flops than it is credited with
// (69 GFLOP at 8B; ProductGFLOPs counts what ran).
func OutFLOPs(s graph.BenchShape, outSeqs int) float64 {
	t, qd, d := float64(s.Tokens), float64(s.NHeads*s.HeadDim), float64(s.Hidden)
	return float64(outSeqs) * (5*t*t*qd + 4*t*qd*d)
}

// ForwardFLOPs counts one frozen decoder layer on nSeq sequences of T
// tokens: the q, k, v and o projections, the SwiGLU feed-forward (three
// products of D×F) and causal attention (Q·Kᵀ and P·V, T²·QD each).
func ForwardFLOPs(c model.Config, nSeq, T int) float64 {
	n := float64(nSeq * T)
	d, qd, kv, f := float64(c.Hidden), float64(c.QDim()), float64(c.KVDim()), float64(c.FFN)
	return 2*n*d*(2*qd+2*kv) + 6*n*d*f + float64(nSeq)*2*float64(T)*float64(T)*qd
}

// OutSeqs is how many sequences of a step feed the output term in Step.
func OutSeqs(s graph.BenchShape) int { return min(2, s.Seqs) }

// Timing is how a row is timed: Warm untimed runs, then the median of
// Steps timed ones, each after a sample of Probe (none when nil). With
// Survey the steps are there for their products' shapes (Suite), and Step
// runs none with the targets reused.
type Timing struct {
	Warm, Steps int
	Probe       *linalg.Probe
	Survey      bool
}

// Step times t's training steps (graph Run + Adam) of one shape and loss
// ("kv" or "kv+out"), then (unless t.Survey) as many with the batch's
// targets reused (Rerun), and reports the medians.
func Step(ctx context.Context, shape graph.BenchShape, loss string, t Timing) (Row, error) {
	spec := graph.NewRandomSpec(shape, 1)
	flop := KVFLOPs(shape)
	switch loss {
	case "kv":
	case "kv+out":
		spec.OutSeqs, spec.LambdaOut = OutSeqs(shape), 1
		flop += OutFLOPs(shape, spec.OutSeqs)
	default:
		return Row{}, fmt.Errorf("unknown loss %q (want kv or kv+out)", loss)
	}
	layer, err := graph.NewLayer(spec, graph.RandomFactors(spec, 2))
	if err != nil {
		return Row{}, fmt.Errorf("shape %s: %w", shape.Name, err)
	}
	defer layer.Close()
	x := graph.RandomInput(spec, 3)
	params := layer.Params()
	var sizes []int
	for _, p := range params {
		sizes = append(sizes, len(p.Value))
	}
	adam := train.NewAdam(sizes)
	var prod linalg.ProductStats
	var peaks []float64
	med, err := t.median(ctx, &peaks, func(timed bool) error {
		linalg.CountProducts(timed)
		_, err := layer.Run(x)
		if p := linalg.CountProducts(false); timed {
			prod = prod.Plus(p)
		}
		adam.Step(params, 1e-5)
		return err
	})
	if err != nil {
		return Row{}, fmt.Errorf("shape %s: %w", shape.Name, err)
	}
	var pre float64
	if !t.Survey {
		pre, err = t.median(ctx, &peaks, func(bool) error {
			_, err := layer.Rerun()
			adam.Step(params, 1e-5)
			return err
		})
		if err != nil {
			return Row{}, fmt.Errorf("shape %s: %w", shape.Name, err)
		}
	}
	tokens := shape.Seqs * shape.Tokens
	r := row(shape.Name, shape.Hidden, shape.KVDim(), shape.Rank, tokens, loss, med, pre, flop)
	if !t.Survey {
		r.GFLOPPrecomp = (flop - TargetFLOPs(shape)) / 1e9
	}
	r.setProducts(prod)
	r.PeakAdjacent = middle(peaks)
	return r, nil
}

// ForwardShape is the frozen forward's reference: a Llama-2-7B layer on
// one sequence of 512 tokens (the vocabulary is cut to keep the synthetic
// model small; the layer does not see it).
var ForwardShape = struct {
	Name   string
	Config model.Config
	Tokens int
}{"llama2-7b", model.Config{Arch: "llama", Hidden: 4096, Layers: 1, Heads: 32, KVHeads: 32, HeadDim: 128, FFN: 11008, Vocab: 256, ContextLength: 4096, RopeBase: 10000, RMSEps: 1e-5}, 512}

// Forward times t's frozen forwards of one decoder layer of c with
// random weights on one sequence of T tokens (model.Block.Forward, what
// capture, advance and eval run per layer) and reports the median.
func Forward(ctx context.Context, name string, c model.Config, T int, t Timing) (Row, error) {
	m, err := model.SyntheticShape(c, 1)
	if err != nil {
		return Row{}, err
	}
	defer m.Close()
	b, err := m.Block(0)
	if err != nil {
		return Row{}, err
	}
	rope := model.NewRopeTable(T, b.Attn.Rope)
	h0 := make([]float32, T*c.Hidden)
	for i := range h0 {
		h0[i] = float32(i%13)/6 - 1
	}
	h := make([]float32, len(h0))
	defer b.Freeze()()
	var prod linalg.ProductStats
	var peaks []float64
	med, err := t.median(ctx, &peaks, func(timed bool) error {
		copy(h, h0)
		linalg.CountProducts(timed)
		err := b.Forward(c, h, 1, T, rope, nil)
		if p := linalg.CountProducts(false); timed {
			prod = prod.Plus(p)
		}
		return err
	})
	if err != nil {
		return Row{}, fmt.Errorf("forward %s: %w", name, err)
	}
	r := row(name, c.Hidden, c.KVDim(), 0, T, "forward", med, 0, ForwardFLOPs(c, 1, T))
	r.setProducts(prod)
	r.PeakAdjacent = middle(peaks)
	return r, nil
}

func row(shape string, hidden, kv, rank, tokens int, loss string, med, pre, flop float64) Row {
	return Row{
		Shape: shape, Hidden: hidden, KVDim: kv, Rank: rank, Tokens: tokens, Loss: loss,
		MsPerStep: med * 1e3, MsPrecomp: pre * 1e3, TokensPS: float64(tokens) / med,
		GFLOP: flop / 1e9, GFLOPs: flop / med / 1e9,
		Precision: linalg.CurrentPrecision().String(), Threads: linalg.Threads(), Backend: linalg.Backend(),
	}
}

// setProducts fills ProductGFLOPs from the products of the timed steps.
func (r *Row) setProducts(p linalg.ProductStats) {
	r.products = p
	if busy := p.Busy(runtime.GOMAXPROCS(0)); busy > 0 {
		r.ProductGFLOPs = p.FLOP / busy / 1e9
	}
}

// SetFraction fills r.Fraction from the peak of r's precision (left 0 when
// peaks has none for it).
func (r *Row) SetFraction(peaks []linalg.PeakResult) {
	for _, p := range peaks {
		if p.Precision.String() == r.Precision && p.GFLOPs > 0 {
			r.Fraction = r.GFLOPs / p.GFLOPs
			if r.MsPrecomp > 0 {
				r.FractionPrecomp = r.GFLOPPrecomp / (r.MsPrecomp / 1e3) / p.GFLOPs
			}
			r.ProductFraction = r.ProductGFLOPs / p.GFLOPs
		}
	}
	if q := r.PeakAdjacent; q > 0 {
		r.FractionAdjacent, r.ProductFractionAdjacent = r.GFLOPs/q, r.ProductGFLOPs/q
		if r.MsPrecomp > 0 {
			r.FractionPrecompAdjacent = r.GFLOPPrecomp / (r.MsPrecomp / 1e3) / q
		}
	}
}

// median runs f t.Warm+t.Steps times (timed: whether the run is one of the
// last t.Steps) and returns the median time of the timed runs, in seconds;
// before each timed run it appends a sample of t.Probe to peaks (untimed).
func (t Timing) median(ctx context.Context, peaks *[]float64, f func(timed bool) error) (float64, error) {
	var times []float64
	for i := 0; i < t.Warm+t.Steps; i++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		timed := i >= t.Warm
		if timed && t.Probe != nil {
			*peaks = append(*peaks, t.Probe.Sample())
		}
		t0 := time.Now()
		if err := f(timed); err != nil {
			return 0, err
		}
		if timed {
			times = append(times, time.Since(t0).Seconds())
		}
	}
	return middle(times), nil
}

// middle is the median of v (the upper one of an even count), 0 for none.
func middle(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// Suite is one run of `cskv bench`: a training step per shape and loss,
// optionally the frozen forward of ForwardShape, each the median of Steps
// timed steps after Warm untimed ones, each step after a sample of the
// peak product of the precision in use (Timing.Probe), with Threads BLAS
// threads (0 = linalg.ThreadsFor the layer's width). With Survey, one
// step of each configuration first finds its heavy products (those
// carrying HeavyShare of its arithmetic or more), and the peak of the
// precision in use is measured at those at least as large (m·n·k) as the
// smallest of PeakShapes too: no row's products then run faster than the
// peak because its shapes suit the machine better than PeakShapes do.
// Smaller products are left out: measured again and again, their operands
// stay in the caches, which a step's products do not find them in.
type Suite struct {
	Shapes      []graph.BenchShape
	Losses      []string // "kv" and/or "kv+out"
	Forward     bool
	Warm, Steps int
	Threads     int
	PeakShapes  [][3]int // products measuring the peak (Peaks)
	PeakSeconds float64
	Survey      bool
}

// HeavyShare is the share of a row's product arithmetic from which Suite's
// survey measures the peak at that product's shape.
const HeavyShare = 0.05

// Run surveys the configurations, measures the peaks, then times every
// configuration of s; emit gets each row as it is measured, its Fraction
// of the peak set.
func (s Suite) Run(ctx context.Context, emit func(Row) error) ([]linalg.PeakResult, error) {
	type config struct {
		width int
		run   func(Timing) (Row, error)
	}
	var configs []config
	for _, shape := range s.Shapes {
		for _, loss := range s.Losses {
			configs = append(configs, config{shape.Hidden, func(t Timing) (Row, error) { return Step(ctx, shape, loss, t) }})
		}
	}
	if s.Forward {
		f := ForwardShape
		configs = append(configs, config{f.Config.Hidden, func(t Timing) (Row, error) { return Forward(ctx, f.Name, f.Config, f.Tokens, t) }})
	}
	// withThreads runs f with the BLAS threads of a layer of width.
	withThreads := func(width int, f func() (Row, error)) (Row, error) {
		prev := linalg.Threads()
		restore := func() { linalg.SetThreads(prev) }
		if s.Threads > 0 {
			linalg.SetThreads(s.Threads)
		} else {
			restore = linalg.ThreadsFor(width)
		}
		defer restore()
		return f()
	}
	size := func(p [3]int) int { return p[0] * p[1] * p[2] }
	smallest := 0
	if len(s.PeakShapes) > 0 {
		smallest = size(slices.MinFunc(s.PeakShapes, func(a, b [3]int) int { return size(a) - size(b) }))
	}
	var own [][3]int
	for _, c := range configs {
		if !s.Survey {
			break
		}
		r, err := withThreads(c.width, func() (Row, error) { return c.run(Timing{Steps: 1, Survey: true}) })
		if err != nil {
			return nil, err
		}
		for _, sh := range r.products.Heavy(HeavyShare) {
			if p := [3]int{sh.M, sh.N, sh.K}; size(p) >= smallest && !slices.Contains(s.PeakShapes, p) && !slices.Contains(own, p) {
				own = append(own, p)
			}
		}
	}
	peaks, err := Peaks(ctx, s.PeakShapes, own, s.PeakSeconds)
	if err != nil {
		return nil, err
	}
	t := Timing{Warm: s.Warm, Steps: s.Steps}
	for _, p := range peaks {
		if p.Precision == linalg.CurrentPrecision() {
			if t.Probe, err = linalg.NewProbe(p); err != nil {
				return nil, err
			}
		}
	}
	for _, c := range configs {
		r, err := withThreads(c.width, func() (Row, error) { return c.run(t) })
		if err != nil {
			return nil, err
		}
		r.SetFraction(peaks)
		if err := emit(r); err != nil {
			return nil, err
		}
	}
	return peaks, nil
}
