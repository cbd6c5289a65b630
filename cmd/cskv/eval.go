package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

func runEval(ctx context.Context, c *cli, args []string) error {
	var d dataFlags
	modelPath := modelFlag(c.FlagSet)
	d.register(c.FlagSet, "evaluation", "chunks", 0, "number of consecutive chunks to evaluate (0 = all)")
	batch := c.Int("batch", 4, "chunks evaluated together")
	var cf cacheFlags
	cf.register(c.FlagSet, "CSKV projections file (from init, train, export or import): evaluate the compressed cache; also a reference .ckpt pair or a plain safetensors file with --rope-layout",
		"evaluate projections made for a different base model (digest mismatch)")
	ropeLayout := c.String("rope-layout", "", "with --projections of a file without cskv metadata: key-row order hf (Hugging Face rotate-half) or meta (adjacent pairs)")
	asJSON := c.Bool("json", false, "print one JSON object on stdout instead of text")
	c.precisionFlag(linalg.F32)
	log, err := c.start(args)
	if err != nil {
		return err
	}
	if *batch < 1 {
		return fmt.Errorf("%w: --batch %d: must be ≥ 1", errUsage, *batch)
	}
	m, chunks, err := d.open(c.FlagSet, log, *modelPath, data.SyntheticEvalSeed, data.SyntheticEvalChunks)
	if err != nil {
		return err
	}
	defer m.Close()
	if d.seqLen > m.Config.ContextLength {
		log.WithFields(logrus.Fields{"seq_len": d.seqLen, "context_length": m.Config.ContextLength}).Warn("chunks are longer than the model's trained context")
	}
	progress := func(desc string) (eval.Progress, func()) {
		bar := c.lf.bar(len(chunks), desc)
		return func(done, total int) {
				if bar != nil {
					bar.Set(done)
				}
			}, func() {
				if bar != nil {
					bar.Finish()
				}
			}
	}
	if cf.path != "" {
		proj, s, err := cf.projections(m, *ropeLayout, log)
		if err != nil {
			return err
		}
		return evalCompressed(ctx, m, chunks, cf.path, proj, s, *batch, *asJSON, progress)
	}
	p, done := progress("eval chunks")
	res, err := eval.Perplexity(ctx, m, chunks, nil, *batch, p)
	done()
	if err != nil {
		return err
	}
	out := struct {
		Model     string `json:"model"`
		Synthetic bool   `json:"synthetic"`
		eval.Result
	}{m.Path, m.Synthetic(), res}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	fmt.Printf("model       %s\n", describe(m))
	fmt.Printf("tokens      %d (%d chunks of %d; %d targets)\n", res.Tokens, res.Chunks, res.SeqLen, res.Targets)
	fmt.Printf("mean loss   %.5f nats\n", res.MeanLoss)
	fmt.Printf("perplexity  %.4f\n", res.Perplexity)
	fmt.Printf("speed       %.0f tokens/s (%.2f s)\n", res.TokensPerS, res.Seconds)
	return nil
}

// evalCompressed evaluates the compressed cache from a projections file:
// perplexity, per-layer reconstruction errors and the memory table.
func evalCompressed(ctx context.Context, m *model.Model, chunks [][]int, path string, proj *checkpoints.Projections, s kvcache.Settings, batch int, asJSON bool,
	progress func(string) (eval.Progress, func())) error {
	rep, err := eval.EvaluateCompressed(ctx, m, chunks, proj, s, batch, progress)
	if err != nil {
		return err
	}
	base, res, errs, mem := rep.Baseline, rep.Compressed, rep.Errors, rep.Memory
	k, v := eval.MeanErrors(errs)
	ck, cv := eval.MeanErrors(rep.ChainErrors)
	out := struct {
		Model       string            `json:"model"`
		Synthetic   bool              `json:"synthetic"`
		Projections string            `json:"projections"`
		Window      int               `json:"window"`
		WindowMode  string            `json:"window_mode"`
		KQuant      string            `json:"k_quant"`
		VQuant      string            `json:"v_quant"`
		Baseline    float64           `json:"baseline_perplexity"`
		Result      eval.Result       `json:"compressed"`
		KRel        float64           `json:"k_rel_err"`       // on the original model's attention inputs
		VRel        float64           `json:"v_rel_err"`       // (the reference's definition)
		KRelComp    float64           `json:"k_rel_err_chain"` // on the compressed model's own inputs
		VRelComp    float64           `json:"v_rel_err_chain"`
		Layers      []eval.LayerError `json:"layers"`
		Memory      []eval.MemRow     `json:"memory"`
	}{m.Path, m.Synthetic(), path, s.Window, s.Mode.String(), s.K.String(), s.V.String(), base.Perplexity, res, k, v, ck, cv, errs, mem}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	fmt.Printf("model        %s\n", describe(m))
	fmt.Printf("projections  %s (%s)\n", path, rankList(rep.KRanks, rep.VRanks))
	fmt.Printf("cache        window %d (%s), keys %s, values %s\n", s.Window, s.Mode, s.K, s.V)
	fmt.Printf("tokens       %d (%d chunks of %d)\n", res.Tokens, res.Chunks, res.SeqLen)
	fmt.Printf("perplexity   %.4f compressed vs %.4f uncompressed (%+.2f%%)\n", res.Perplexity, base.Perplexity, 100*(res.Perplexity/base.Perplexity-1))
	fmt.Printf("rel err      K %.4f, V %.4f (mean over layers, on the original model's inputs; %.4f, %.4f on the compressed model's)\n\n", k, v, ck, cv)
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(w, "layer\t‖K−K̂‖/‖K‖\t‖V−V̂‖/‖V‖")
	for _, e := range errs {
		fmt.Fprintf(w, "%d\t%.4f\t%.4f\n", e.Layer, e.K, e.V)
	}
	w.Flush()
	fmt.Println()
	printMemory(mem)
	return nil
}
