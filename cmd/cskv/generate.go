package main

import (
	"context"
	"fmt"

	"github.com/cskv/cskv/model"
)

func runGenerate(ctx context.Context, args []string) error {
	fs := newFlagSet("generate", "[--model M] [--prompt P] [-n N]")
	var lf logFlags
	lf.register(fs)
	modelPath := fs.String("model", "", "model: GGUF file or Hugging Face directory (default: the embedded synthetic model)")
	prompt := fs.String("prompt", "Once upon a time", "prompt text (needs a tokenizer)")
	ids := fs.String("prompt-ids", "", "prompt as whitespace-separated token ids (instead of --prompt; BOS is not added)")
	n := fs.Int("n", 64, "tokens to generate")
	if err := parse(fs, args); err != nil {
		return err
	}
	if _, err := lf.logger(); err != nil {
		return err
	}
	if *n < 1 {
		return fmt.Errorf("%w: -n %d: must be ≥ 1", errUsage, *n)
	}
	m, err := openModel(*modelPath)
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
	out, err := greedy(ctx, m, toks, *n)
	if err != nil {
		return err
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

// greedy feeds the prompt and returns n greedily chosen next tokens.
func greedy(ctx context.Context, m *model.Model, prompt []int, n int) ([]int, error) {
	if len(prompt) == 0 {
		return nil, fmt.Errorf("empty prompt")
	}
	d, err := m.NewDecoder(len(prompt)+n, nil)
	if err != nil {
		return nil, err
	}
	var logits []float32
	for _, t := range prompt {
		if logits, err = d.Step(t); err != nil {
			return nil, err
		}
	}
	out := make([]int, 0, n)
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		next := model.Argmax(logits)
		out = append(out, next)
		if i+1 < n {
			if logits, err = d.Step(next); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
