package main

import (
	"context"
	"fmt"
)

func runConvert(ctx context.Context, c *cli, args []string) error {
	modelPath := c.String("model", "", "GGUF model to convert (required)")
	out := c.String("out", "", "output Hugging Face directory; must not exist (required)")
	log, err := c.start(args)
	if err != nil {
		return err
	}
	if *modelPath == "" || *out == "" {
		return fmt.Errorf("%w: --model and --out are required", errUsage)
	}
	m, err := openModel(*modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.ConvertHF(*out); err != nil {
		return err
	}
	log.WithFields(map[string]any{"from": m.Path, "to": *out}).Info("converted to a Hugging Face directory (Q/K rows in rotate-half layout)")
	return nil
}
