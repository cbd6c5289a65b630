package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/train"
)

// benchRow is one timed configuration.
type benchRow struct {
	Shape     string  `json:"shape"`
	Hidden    int     `json:"hidden"`
	KVDim     int     `json:"kv_dim"`
	Rank      int     `json:"rank"`
	Tokens    int     `json:"tokens_per_step"`
	Loss      string  `json:"loss"`                    // "kv" or "kv+out"
	MsPerStep float64 `json:"ms_per_step"`             // targets recomputed each step (Run)
	MsPrecomp float64 `json:"ms_per_step_precomputed"` // targets of the batch reused (Rerun)
	TokensPS  float64 `json:"tokens_per_s"`
	GFLOPs    float64 `json:"gflops"` // KV-term arithmetic (see kvFLOPs) per second
	Threads   int     `json:"blas_threads"`
	Backend   string  `json:"backend"`
}

// kvFLOPs counts the arithmetic of one KV-loss training step: the targets
// X·Wkᵀ and X·Wvᵀ (2·n·D·KV each) and, per side, the features C = X·Aᵀ
// (2·n·D·r), the reconstruction C·Bᵀ (2·n·r·KV) and the backward products
// dB = dK̂ᵀ·C, dC = dK̂·B (2·n·r·KV each) and dA = dCᵀ·X (2·n·D·r). At the
// Llama-3-8B shape that is 81.6 GFLOP, the count behind the reference's
// 219 GFLOP/s at 373 ms.
func kvFLOPs(s graph.BenchShape) float64 {
	n := float64(s.Seqs * s.Tokens)
	d, kv, r := float64(s.Hidden), float64(s.KVDim()), float64(s.Rank)
	return 2*2*n*d*kv + 2*(4*n*d*r+6*n*r*kv)
}

func runBench(ctx context.Context, args []string) error {
	fs := newFlagSet("bench", "[--shapes a,b] [--loss kv,kv+out] [--steps N] [--json]")
	var lf logFlags
	lf.register(fs)
	var names []string
	for _, s := range graph.BenchShapes() {
		names = append(names, s.Name)
	}
	shapes := fs.String("shapes", strings.Join(names, ","), "layer shapes to time: "+strings.Join(names, ", "))
	losses := fs.String("loss", "kv,kv+out", "losses to time: kv (the KV term) and/or kv+out (both terms, output term on min(2, seqs) sequences)")
	steps := fs.Int("steps", 5, "timed steps per configuration (the median is reported)")
	warm := fs.Int("warmup", 1, "untimed steps first")
	threads := fs.Int("threads", 0, "BLAS threads (0 = 1 for hidden < 1024, else the library default)")
	asJSON := fs.Bool("json", false, "print one JSON object per row on stdout")
	if err := parse(fs, args); err != nil {
		return err
	}
	if _, err := lf.logger(); err != nil {
		return err
	}
	if *steps < 1 || *warm < 0 || *threads < 0 {
		return fmt.Errorf("%w: --steps must be ≥ 1, --warmup and --threads ≥ 0", errUsage)
	}
	var rows []benchRow
	defaultThreads := linalg.Threads()
	for _, name := range strings.Split(*shapes, ",") {
		i := slices.IndexFunc(graph.BenchShapes(), func(s graph.BenchShape) bool { return s.Name == name })
		if i < 0 {
			return fmt.Errorf("%w: --shapes: unknown shape %q (want %s)", errUsage, name, strings.Join(names, ", "))
		}
		shape := graph.BenchShapes()[i]
		for _, loss := range strings.Split(*losses, ",") {
			if loss != "kv" && loss != "kv+out" {
				return fmt.Errorf("%w: --loss: unknown loss %q (want kv or kv+out)", errUsage, loss)
			}
			restore := func() {}
			if *threads > 0 {
				linalg.SetThreads(*threads)
			} else {
				restore = linalg.ThreadsFor(shape.Hidden)
			}
			row, err := benchOne(ctx, shape, loss, *warm, *steps)
			restore()
			if err != nil {
				return err
			}
			row.Threads = linalg.Threads()
			rows = append(rows, row)
			if *asJSON {
				if err := json.NewEncoder(os.Stdout).Encode(row); err != nil {
					return err
				}
			}
		}
	}
	linalg.SetThreads(defaultThreads)
	if *asJSON {
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "backend: %s\n", linalg.Backend())
	fmt.Fprintln(w, "shape\thidden\tkv\trank\ttokens\tloss\tms/step\tms/step (targets precomputed)\ttokens/s\tGFLOP/s (KV part)\tthreads")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%s\t%.2f\t%.2f\t%.0f\t%.1f\t%d\n", r.Shape, r.Hidden, r.KVDim, r.Rank, r.Tokens, r.Loss, r.MsPerStep, r.MsPrecomp, r.TokensPS, r.GFLOPs, r.Threads)
	}
	return w.Flush()
}

// benchOne times warm+steps training steps (graph Run + Adam) of one shape.
func benchOne(ctx context.Context, shape graph.BenchShape, loss string, warm, steps int) (benchRow, error) {
	spec := graph.NewRandomSpec(shape, 1)
	if loss == "kv+out" {
		spec.OutSeqs, spec.LambdaOut = min(2, shape.Seqs), 1
	}
	layer, err := graph.NewLayer(spec, graph.RandomFactors(spec, 2))
	if err != nil {
		return benchRow{}, fmt.Errorf("shape %s: %w", shape.Name, err)
	}
	defer layer.Close()
	x := graph.RandomInput(spec, 3)
	params := layer.Params()
	var sizes []int
	for _, p := range params {
		sizes = append(sizes, len(p.Value))
	}
	adam := train.NewAdam(sizes)
	median := func(step func() error) (float64, error) {
		var times []float64
		for i := 0; i < warm+steps; i++ {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			t0 := time.Now()
			if err := step(); err != nil {
				return 0, fmt.Errorf("shape %s: %w", shape.Name, err)
			}
			adam.Step(params, 1e-5)
			if i >= warm {
				times = append(times, time.Since(t0).Seconds())
			}
		}
		slices.Sort(times)
		return times[len(times)/2], nil
	}
	med, err := median(func() error { _, err := layer.Run(x); return err })
	if err != nil {
		return benchRow{}, err
	}
	pre, err := median(func() error { _, err := layer.Rerun(); return err })
	if err != nil {
		return benchRow{}, err
	}
	tokens := shape.Seqs * shape.Tokens
	return benchRow{
		Shape: shape.Name, Hidden: shape.Hidden, KVDim: shape.KVDim(), Rank: shape.Rank, Tokens: tokens, Loss: loss,
		MsPerStep: med * 1e3, MsPrecomp: pre * 1e3, TokensPS: float64(tokens) / med, GFLOPs: kvFLOPs(shape) / med / 1e9, Backend: linalg.Backend(),
	}, nil
}
