package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/cskv/cskv/bench"
	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/linalg"
)

func runBench(ctx context.Context, c *cli, args []string) error {
	var names []string
	for _, s := range graph.BenchShapes() {
		names = append(names, s.Name)
	}
	// The pure-Go build needs minutes per step at the 7B/8B shapes: by default
	// it times the small shape only, and measures its peak at a small product.
	defShapes, peakShapes, defForward := strings.Join(names, ","), linalg.PeakShapes, true
	slow := linalg.SlowBackend(4096) != ""
	if slow {
		defShapes, peakShapes, defForward = graph.ShapeStories260K.Name, [][3]int{{512, 512, 512}}, false
	}
	shapes := c.String("shapes", defShapes, "layer shapes to time: "+strings.Join(names, ", "))
	losses := c.String("loss", "kv,kv+out", "losses to time: kv (the KV term) and/or kv+out (both terms, output term on min(2, seqs) sequences)")
	steps := c.Int("steps", 3, "timed steps per configuration (the median is reported)")
	warm := c.Int("warmup", 1, "untimed steps first")
	threads := c.Int("threads", 0, "BLAS threads (0 = 1 for hidden < 1024, else the library default)")
	peakSec := c.Float64("peak-seconds", 0.5, "seconds per shape and kernel measuring the matrix-product peak")
	forward := c.Bool("forward", defForward, "also time the frozen forward of a "+bench.ForwardShape.Name+" layer")
	asJSON := c.Bool("json", false, "print one JSON object per row on stdout")
	c.precisionFlag(linalg.Auto)
	log, err := c.start(args)
	if err != nil {
		return err
	}
	if *steps < 1 || *warm < 0 || *threads < 0 || *peakSec <= 0 {
		return fmt.Errorf("%w: --steps must be ≥ 1, --warmup and --threads ≥ 0, --peak-seconds > 0", errUsage)
	}
	var todo []graph.BenchShape
	for _, name := range strings.Split(*shapes, ",") {
		i := slices.IndexFunc(graph.BenchShapes(), func(s graph.BenchShape) bool { return s.Name == name })
		if i < 0 {
			return fmt.Errorf("%w: --shapes: unknown shape %q (want %s)", errUsage, name, strings.Join(names, ", "))
		}
		todo = append(todo, graph.BenchShapes()[i])
	}
	for _, loss := range strings.Split(*losses, ",") {
		if loss != "kv" && loss != "kv+out" {
			return fmt.Errorf("%w: --loss: unknown loss %q (want kv or kv+out)", errUsage, loss)
		}
	}
	if slow {
		warnSlow(log, 4096)
		if flagSet(c.FlagSet, "shapes") {
			peakShapes = linalg.PeakShapes
		}
	}
	suite := bench.Suite{Shapes: todo, Losses: strings.Split(*losses, ","), Forward: *forward, Warm: *warm, Steps: *steps,
		Threads: *threads, PeakShapes: peakShapes, PeakSeconds: *peakSec, Survey: !slow}
	var rows []bench.Row
	peaks, err := suite.Run(ctx, func(r bench.Row) error {
		rows = append(rows, r)
		if *asJSON {
			return json.NewEncoder(os.Stdout).Encode(r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "backend: %s; precision %s; %d BLAS threads\n", linalg.Backend(), linalg.CurrentPrecision(), linalg.Threads())
	for _, p := range peaks {
		fmt.Fprintf(w, "peak %s: %.1f GFLOP/s (%d×%d×%d, %s)\n", p.Precision, p.GFLOPs, p.M, p.K, p.N, p.Kernel)
	}
	fmt.Fprintln(w, "shape\thidden\tkv\trank\ttokens\tloss\tms/step\ttokens/s\tGFLOP/step\tGFLOP/s\tof peak (adjacent)\tproducts of peak (adjacent)\tms/step (targets precomputed)\tGFLOP\tof peak (adjacent)\tadjacent peak\tthreads")
	// pct is a fraction of the peak, and in parentheses of the adjacent one.
	pct := func(f, adjacent float64) string {
		if f == 0 {
			return "-"
		}
		if adjacent == 0 {
			return fmt.Sprintf("%.0f%%", 100*f)
		}
		return fmt.Sprintf("%.0f%% (%.0f%%)", 100*f, 100*adjacent)
	}
	for _, r := range rows {
		pre, preFLOP := "-", "-"
		if r.MsPrecomp > 0 {
			pre, preFLOP = fmt.Sprintf("%.2f", r.MsPrecomp), fmt.Sprintf("%.1f", r.GFLOPPrecomp)
		}
		adj := "-"
		if r.PeakAdjacent > 0 {
			adj = fmt.Sprintf("%.1f", r.PeakAdjacent)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%s\t%.2f\t%.0f\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.Shape, r.Hidden, r.KVDim, r.Rank, r.Tokens, r.Loss,
			r.MsPerStep, r.TokensPS, r.GFLOP, r.GFLOPs, pct(r.Fraction, r.FractionAdjacent), pct(r.ProductFraction, r.ProductFractionAdjacent),
			pre, preFLOP, pct(r.FractionPrecomp, r.FractionPrecompAdjacent), adj, r.Threads)
	}
	return w.Flush()
}
