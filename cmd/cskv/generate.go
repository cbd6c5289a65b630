package main

import (
	"context"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/linalg"
)

func runGenerate(ctx context.Context, c *cli, args []string) error {
	modelPath := modelFlag(c.FlagSet)
	prompt := c.String("prompt", "Once upon a time", "prompt text (needs a tokenizer)")
	ids := c.String("prompt-ids", "", "prompt as whitespace-separated token ids (instead of --prompt; BOS is not added)")
	n := c.Int("n", 64, "tokens to generate")
	var cf cacheFlags
	cf.register(c.FlagSet, "CSKV projections: decode with the real bi-branch compressed cache", "use projections made for a different base model")
	verify := c.Bool("verify", false, "with --projections: use row-exact products and check that the real cache's logits equal the parallel fake-quantised evaluation's")
	c.precisionFlag(linalg.F32)
	log, err := c.start(args)
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
	if *verify && cf.path == "" {
		return fmt.Errorf("%w: --verify needs --projections", errUsage)
	}
	if *verify {
		linalg.SetExact(true)
	}
	var out []int
	if cf.path == "" {
		if out, _, err = eval.Greedy(ctx, m, toks, *n, nil); err != nil {
			return err
		}
	} else {
		proj, s, err := cf.projections(m, "", log)
		if err != nil {
			return err
		}
		g, err := eval.GenerateCompressed(ctx, m, toks, *n, proj, s, *verify)
		if err != nil {
			return err
		}
		if *verify {
			fmt.Fprintf(os.Stderr, "verify: %d positions, max |logit(real cache) − logit(parallel fake-quant)| = %.3g\n", g.Positions, g.MaxDiff)
			if g.MaxDiff > 1e-4 {
				return fmt.Errorf("verify: real cache and parallel evaluation differ by %.3g > 1e-4", g.MaxDiff)
			}
		}
		defer reportCache(g.Layers, len(toks)+*n-1, m.Config.KVDim())
		out = g.Tokens
	}
	if m.Synthetic() {
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
