package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/train"
)

// runCompare trains full-precision projections once and quantisation-aware
// ones per bit width, and evaluates each at that width (bi-branch cache):
// post-training quantisation versus QAT (docs/METHOD.md §4).
func runCompare(ctx context.Context, c *cli, args []string) error {
	cfg := train.Reference()
	cfg.LambdaOut = 0 // the reference QAT recipe: the KV term only
	registerProblem(c.FlagSet, &cfg)
	c.IntVar(&cfg.Steps, "steps", cfg.Steps, "Adam steps per layer")
	c.Float64Var(&cfg.LR, "lr", cfg.LR, "learning rate")
	c.Float64Var(&cfg.LambdaOut, "lambda-out", cfg.LambdaOut, "weight of the output term")
	c.IntVar(&cfg.Batch, "batch", cfg.Batch, "sequences per step (at most --calib-chunks)")
	c.IntVar(&cfg.OutSeqs, "out-seqs", cfg.OutSeqs, "sequences of each batch that feed the output term (with --lambda-out)")
	bitsFlag := c.String("bits", "4,2", "bit widths to compare")
	var rf reportFlags
	rf.register(c.FlagSet, "evaluation data (default with the synthetic model: sampled from it)", "print the rows as JSON")
	out := c.String("out", "", "directory for the runs (default: a temporary one, removed afterwards)")
	log, err := c.startRun(args, &cfg)
	if err != nil {
		return err
	}
	for _, f := range []string{"k-bits", "v-bits", "dtype"} {
		if flagSet(c.FlagSet, f) {
			return fmt.Errorf("%w: --%s: compare sets the bits itself (use --bits)", errUsage, f)
		}
	}
	var bits []int
	for _, f := range strings.Split(*bitsFlag, ",") {
		b, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || (b != 2 && b != 3 && b != 4 && b != 8) {
			return fmt.Errorf("%w: --bits: %q is not one of 2, 3, 4, 8", errUsage, f)
		}
		bits = append(bits, b)
	}
	dir := *out
	if dir == "" {
		if dir, err = os.MkdirTemp("", "cskv-compare-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	cmp := eval.Comparison{Train: cfg, Bits: bits, Dir: dir, Chunks: rf.chunks, Window: rf.window, Env: trainEnv(&c.lf, log, cfg.Steps), Log: log}
	for _, b := range append([]int{16}, bits...) {
		if err := cmp.RunConfig(b).Validate(); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if cmp.Data, err = rf.source(cfg); err != nil {
		return err
	}
	if rf.data == "" && cfg.Model != "" {
		return fmt.Errorf("%w: %v", errUsage, data.ErrNeedFile)
	}
	m, err := openModel(cfg.Model)
	if err != nil {
		return err
	}
	defer m.Close()
	rows, err := eval.Compare(ctx, m, cmp)
	if err != nil {
		return err
	}
	if rf.json {
		return json.NewEncoder(os.Stdout).Encode(rows)
	}
	fmt.Printf("model     %s\n", describe(m))
	fmt.Printf("setting   k/v density %g/%g, bi-branch %s W=%d, keys %s, values per token, zero point %s\n",
		cfg.KDensity, cfg.VDensity, cfg.Window, rf.window, cfg.KQuant, cfg.QuantZero)
	fmt.Printf("baseline  %.4f (uncompressed)\n\n", rows[0].Baseline)
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(w, "bits\tPTQ of full-precision training\tQAT\tQAT gain")
	for i := 0; i < len(rows); i += 2 {
		p, q := rows[i], rows[i+1]
		fmt.Fprintf(w, "%d\t%.4f\t%.4f\t%+.2f%%\n", p.Bits, p.Perplexity, q.Perplexity, 100*(p.Perplexity/q.Perplexity-1))
	}
	return w.Flush()
}
