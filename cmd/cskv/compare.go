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
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// runCompare trains full-precision projections once and quantisation-aware
// ones per bit width, and evaluates each at that width (bi-branch cache):
// post-training quantisation versus QAT (docs/METHOD.md §4).
func runCompare(ctx context.Context, args []string) error {
	cfg := train.Reference()
	cfg.LambdaOut = 0 // the reference QAT recipe: the KV term only
	fs := newFlagSet("compare", "[--model M --data T --eval-data E] [--bits 4,2] [flags]")
	var lf logFlags
	lf.register(fs)
	registerProblem(fs, &cfg)
	fs.IntVar(&cfg.Steps, "steps", cfg.Steps, "Adam steps per layer")
	fs.Float64Var(&cfg.LR, "lr", cfg.LR, "learning rate")
	fs.Float64Var(&cfg.LambdaOut, "lambda-out", cfg.LambdaOut, "weight of the output term")
	bitsFlag := fs.String("bits", "4,2", "bit widths to compare")
	evalData := fs.String("eval-data", "", "evaluation data (default with the synthetic model: sampled from it)")
	evalChunks := fs.Int("eval-chunks", 64, "evaluation chunks")
	window := fs.Int("window", 32, "bi-branch window W of the evaluation")
	out := fs.String("out", "", "directory for the runs (default: a temporary one, removed afterwards)")
	asJSON := fs.Bool("json", false, "print the rows as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := lf.logger()
	if err != nil {
		return err
	}
	for _, f := range []string{"k-bits", "v-bits", "dtype"} {
		if flagSet(fs, f) {
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
	syntheticDefaults(fs, cfg.Model, &cfg.SeqLen, &cfg.CalibChunks)
	dir := *out
	if dir == "" {
		if dir, err = os.MkdirTemp("", "cskv-compare-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	c := eval.Comparison{Train: cfg, Bits: bits, Dir: dir, Chunks: *evalChunks, Env: trainEnv(&lf, log, cfg.Steps), Log: log,
		Cache: func(mc model.Config, kRank, vRank, b int) (kvcache.Settings, error) {
			return settingsFrom(mc, kRank, vRank, *window, cfg.Window.String(), b, b, cfg.KQuant.String(), cfg.QuantWindow, cfg.QuantZero.String())
		}}
	for _, b := range append([]int{16}, bits...) {
		if err := c.RunConfig(b).Validate(); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	evalSrc, err := (&dataFlags{path: *evalData, format: string(data.FormatAuto), seqLen: cfg.SeqLen}).source(data.SyntheticEvalSeed, data.SyntheticEvalChunks)
	if err != nil {
		return err
	}
	if *evalChunks < 0 {
		return fmt.Errorf("%w: --eval-chunks %d: must be ≥ 0", errUsage, *evalChunks)
	}
	if *evalData == "" && cfg.Model != "" {
		return fmt.Errorf("%w: %v", errUsage, data.ErrNeedFile)
	}
	c.Data = evalSrc
	m, err := openModel(cfg.Model)
	if err != nil {
		return err
	}
	defer m.Close()
	rows, err := eval.Compare(ctx, m, c)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(rows)
	}
	fmt.Printf("model     %s\n", describe(m))
	fmt.Printf("setting   k/v density %g/%g, bi-branch %s W=%d, keys %s, values per token, zero point %s\n",
		cfg.KDensity, cfg.VDensity, cfg.Window, *window, cfg.KQuant, cfg.QuantZero)
	fmt.Printf("baseline  %.4f (uncompressed)\n\n", rows[0].Baseline)
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(w, "bits\tPTQ of full-precision training\tQAT\tQAT gain")
	for i := 0; i < len(rows); i += 2 {
		p, q := rows[i], rows[i+1]
		fmt.Fprintf(w, "%d\t%.4f\t%.4f\t%+.2f%%\n", p.Bits, p.Perplexity, q.Perplexity, 100*(p.Perplexity/q.Perplexity-1))
	}
	return w.Flush()
}
