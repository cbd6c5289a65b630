package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

func runGenerate(ctx context.Context, args []string) error {
	fs := newFlagSet("generate", "[--model M] [--prompt P] [-n N]")
	var lf logFlags
	lf.register(fs)
	modelPath := modelFlag(fs)
	prompt := fs.String("prompt", "Once upon a time", "prompt text (needs a tokenizer)")
	ids := fs.String("prompt-ids", "", "prompt as whitespace-separated token ids (instead of --prompt; BOS is not added)")
	n := fs.Int("n", 64, "tokens to generate")
	projPath := fs.String("projections", "", "CSKV projections: decode with the real bi-branch compressed cache")
	var cf cacheFlags
	cf.register(fs, 32)
	force := fs.Bool("force", false, "use projections made for a different base model")
	verify := fs.Bool("verify", false, "with --projections: use row-exact products and check that the real cache's logits equal the parallel fake-quantised evaluation's")
	var pf precisionFlag
	pf.register(fs, "f32")
	log, err := start(fs, args, &lf, &pf)
	if err != nil {
		return err
	}
	if *n < 1 {
		return fmt.Errorf("%w: -n %d: must be ≥ 1", errUsage, *n)
	}
	m, err := openWarn(log, *modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	var toks []int
	switch {
	case *ids != "":
		if toks, err = parseIDList(*ids); err != nil {
			return fmt.Errorf("%w: --prompt-ids: %v", errUsage, err)
		}
	case m.Tokenizer == nil:
		toks = []int{0}
	default:
		p, err := m.Encode(*prompt)
		if err != nil {
			return err
		}
		toks = append([]int{m.Tokenizer.BOS()}, p...)
	}
	if n := len(toks) + *n; n > m.Config.ContextLength {
		log.WithFields(logrus.Fields{"tokens": n, "context_length": m.Config.ContextLength}).Warn("generating past the model's trained context")
	}
	var caches []model.LayerCache
	var kls []*kvcache.Layer
	var check func(tokens []int, logits [][]float32) error
	if *verify && *projPath == "" {
		return fmt.Errorf("%w: --verify needs --projections", errUsage)
	}
	if *verify {
		linalg.SetExact(true)
	}
	if *projPath != "" {
		proj, err := readProjectionsFor(m, *projPath, "", *force, log)
		if err != nil {
			return err
		}
		s, err := cf.settings(m.Config, proj.Layers[0].KRank, proj.Layers[0].VRank)
		if err != nil {
			return err
		}
		warnQuantMismatch(proj.Meta, s, log)
		if caches, kls, err = kvcache.NewCaches(m, proj, s); err != nil {
			return err
		}
		check = func(tokens []int, logits [][]float32) error {
			s.FP16Cache = true
			cs, err := kvcache.NewCompressors(m, proj, s)
			if err != nil {
				return err
			}
			return compareParallel(m, tokens, logits, kvcache.Overrides(cs))
		}
	}
	out, logits, err := eval.Greedy(ctx, m, toks, *n, caches)
	if err != nil {
		return err
	}
	if *verify {
		if err := check(append(toks, out...)[:len(logits)], logits); err != nil {
			return err
		}
	}
	if kls != nil {
		defer reportCache(kls, len(toks)+*n-1, m.Config.KVDim())
	}
	if isSynthetic(m) {
		fmt.Printf("(synthetic model: random weights; token ids)\n%v\n", out)
		return nil
	}
	if m.Tokenizer == nil {
		fmt.Println(out)
		return nil
	}
	text, err := m.Tokenizer.Decode(append(toks, out...))
	if err != nil {
		return err
	}
	fmt.Println(text)
	return nil
}

// compareParallel runs the tokens through the parallel forward with the
// overrides and reports (on stderr) the largest difference from the
// step-by-step logits; more than 1e-4 is an error.
func compareParallel(m *model.Model, tokens []int, logits [][]float32, ovs []model.KVOverride) error {
	maxDiff, err := eval.ParallelDiff(m, tokens, logits, ovs)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "verify: %d positions, max |logit(real cache) − logit(parallel fake-quant)| = %.3g\n", len(logits), maxDiff)
	if maxDiff > 1e-4 {
		return fmt.Errorf("verify: real cache and parallel evaluation differ by %.3g > 1e-4", maxDiff)
	}
	return nil
}

// reportCache prints, on stderr, the bytes the real cache holds per layer
// after n tokens, against the memory formula and the fp16 baseline.
func reportCache(kls []*kvcache.Layer, n, kvDim int) {
	var total int64
	for l, kl := range kls {
		got := kl.AllocatedBytes()
		total += got
		want := kvcache.Bytes(kl.Config(), kl.Len()).Total
		fmt.Fprintf(os.Stderr, "cache layer %d: %d tokens, %d bytes allocated (formula %d), %.2f bytes/token vs fp16 %d\n",
			l, kl.Len(), got, want, float64(got)/float64(kl.Len()), kvcache.PerTokenBaseline(kvDim))
	}
	fmt.Fprintf(os.Stderr, "cache total: %d bytes for %d tokens × %d layers (fp16 cache: %d bytes)\n",
		total, n, len(kls), int64(n)*int64(len(kls))*kvcache.PerTokenBaseline(kvDim))
}

// readProjectionsFor reads a projections file and checks it was made for m.
// With a row layout, or for a reference .ckpt pair, the file is imported
// (train.Import) instead: checked against m's shapes, rows put in cskv's order.
func readProjectionsFor(m *model.Model, path, ropeLayout string, force bool, log *logrus.Logger) (*checkpoints.Projections, error) {
	if ropeLayout != "" || strings.HasSuffix(path, ".ckpt") || strings.Contains(path, ",") {
		return train.Import(m, path, ropeLayout)
	}
	proj, err := checkpoints.ReadProjections(path)
	if err != nil {
		return nil, err
	}
	if d := proj.Meta["base_digest"]; d != "" && d != m.Digest {
		msg := fmt.Sprintf("projections %s were made for base model %q (digest %.12s…), not this model (digest %.12s…)", path, proj.Meta["base_model"], d, m.Digest)
		if !force {
			return nil, fmt.Errorf("%s; use --force to use them anyway", msg)
		}
		log.Warn(msg)
	}
	if len(proj.Layers) == 0 {
		return nil, fmt.Errorf("projections %s hold no layers", path)
	}
	return proj, nil
}
