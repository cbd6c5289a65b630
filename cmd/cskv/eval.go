package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
)

func runEval(ctx context.Context, args []string) error {
	fs := newFlagSet("eval", "[--model M] [--data T] [flags]")
	var lf logFlags
	lf.register(fs)
	var d dataFlags
	modelPath := modelFlag(fs)
	d.register(fs, "evaluation", "chunks", 0, "number of consecutive chunks to evaluate (0 = all)")
	batch := fs.Int("batch", 4, "chunks evaluated together")
	projPath := fs.String("projections", "", "CSKV projections file (from init, train, export or import): evaluate the compressed cache; also a reference .ckpt pair or a plain safetensors file with --rope-layout")
	ropeLayout := fs.String("rope-layout", "", "with --projections of a file without cskv metadata: key-row order hf (Hugging Face rotate-half) or meta (adjacent pairs)")
	var cf cacheFlags
	cf.register(fs, 32)
	force := fs.Bool("force", false, "evaluate projections made for a different base model (digest mismatch)")
	asJSON := fs.Bool("json", false, "print one JSON object on stdout instead of text")
	var pf precisionFlag
	pf.register(fs, "f32")
	log, err := start(fs, args, &lf, &pf)
	if err != nil {
		return err
	}
	if *batch < 1 {
		return fmt.Errorf("%w: --batch %d: must be ≥ 1", errUsage, *batch)
	}
	m, err := openWarn(log, *modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	syntheticDefaults(fs, *modelPath, &d.seqLen, nil)
	log.WithField("model", describe(m)).Info("model loaded")
	chunks, err := loadChunks(m, d, data.SyntheticEvalSeed, data.SyntheticEvalChunks)
	if err != nil {
		return err
	}
	if d.seqLen > m.Config.ContextLength {
		log.WithFields(logrus.Fields{"seq_len": d.seqLen, "context_length": m.Config.ContextLength}).Warn("chunks are longer than the model's trained context")
	}
	progress := func(desc string) (eval.Progress, func()) {
		bar := lf.bar(len(chunks), desc)
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
	if *projPath != "" {
		return evalCompressed(ctx, m, chunks, *projPath, *ropeLayout, *force, *batch, *asJSON, progress, log, func(kRank, vRank int) (kvcache.Settings, error) {
			return cf.settings(m.Config, kRank, vRank)
		})
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
	}{m.Path, isSynthetic(m), res}
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
func evalCompressed(ctx context.Context, m *model.Model, chunks [][]int, path, ropeLayout string, force bool, batch int, asJSON bool,
	progress func(string) (eval.Progress, func()), log *logrus.Logger, settings func(kRank, vRank int) (kvcache.Settings, error)) error {
	proj, err := readProjectionsFor(m, path, ropeLayout, force, log)
	if err != nil {
		return err
	}
	s, err := settings(proj.Layers[0].KRank, proj.Layers[0].VRank)
	if err != nil {
		return err
	}
	warnQuantMismatch(proj.Meta, s, log)
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
	}{m.Path, isSynthetic(m), path, s.Window, s.Mode.String(), s.K.String(), s.V.String(), base.Perplexity, res, k, v, ck, cv, errs, mem}
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

// warnQuantMismatch warns when projections trained with QAT settings are
// evaluated with other quantisation settings.
func warnQuantMismatch(meta map[string]string, s kvcache.Settings, log *logrus.Logger) {
	want := map[string]string{"k_bits": fmt.Sprint(s.K.Bits), "v_bits": fmt.Sprint(s.V.Bits)}
	for k, v := range want {
		if got, ok := meta[k]; ok && got != "16" && got != v {
			log.WithFields(logrus.Fields{"setting": k, "file": got, "requested": v}).Warn("projections were trained with other quantisation settings than requested for evaluation")
		}
	}
}
