package main

import (
	"context"
	"fmt"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/model/safetensors"
	"github.com/cskv/cskv/train"
)

func runImport(ctx context.Context, c *cli, args []string) error {
	modelPath := modelFlag(c.FlagSet)
	from := c.String("from", "", "factors to bring in: a CSKV reference checkpoint (either …__k.ckpt or …__v.ckpt of the pair, or K.ckpt,V.ckpt) or a safetensors file in the projections layout")
	layout := c.String("rope-layout", "", "row order of the keys in a file without cskv metadata: hf (Hugging Face rotate-half) or meta (adjacent pairs)")
	out := c.String("out", "", "cskv projections file to write")
	log, err := c.start(args)
	if err != nil {
		return err
	}
	if *from == "" || *out == "" {
		return fmt.Errorf("%w: --from and --out are required", errUsage)
	}
	if *layout != "" && *layout != train.RopeHF && *layout != train.RopeMeta {
		return fmt.Errorf("%w: --rope-layout %q: want hf or meta", errUsage, *layout)
	}
	m, err := openModel(*modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	p, err := train.Import(m, *from, *layout)
	if err != nil {
		return err
	}
	if err := checkpoints.WriteProjections(*out, p, safetensors.F32); err != nil {
		return err
	}
	log.WithField("projections", *out).Infof("imported %d layers (k rank %s, v rank %s) from %s", len(p.Layers), p.Meta["k_rank"], p.Meta["v_rank"], *from)
	fmt.Println(*out)
	return nil
}
