package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/model/safetensors"
	"github.com/cskv/cskv/train"
)

func runImport(ctx context.Context, args []string) error {
	fs := newFlagSet("import", "--from FILE --out P.safetensors [--model M] [--rope-layout hf|meta]")
	var lf logFlags
	lf.register(fs)
	modelPath := modelFlag(fs)
	from := fs.String("from", "", "factors to bring in: a CSKV reference checkpoint (either …__k.ckpt or …__v.ckpt of the pair, or K.ckpt,V.ckpt) or a safetensors file in the projections layout")
	layout := fs.String("rope-layout", "", "row order of the keys in a file without cskv metadata: hf (Hugging Face rotate-half) or meta (adjacent pairs)")
	out := fs.String("out", "", "cskv projections file to write")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := lf.logger()
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

// exportReference writes the reference code's .ckpt pair into dir from a
// projections file, or from a run's checkpoint when projPath is empty; the
// model (optional; a run directory's recorded one by default) supplies
// head_dim and kv_heads.
func exportReference(ckpt, projPath, modelPath, dir string) error {
	if projPath == "" {
		tmp, err := os.MkdirTemp("", "cskv-export-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		projPath = filepath.Join(tmp, "projections.safetensors")
		if err := train.ExportCheckpoint(ckpt, projPath, train.DTypeF32); err != nil {
			return err
		}
	}
	p, err := checkpoints.ReadProjections(projPath)
	if err != nil {
		return err
	}
	var headDim, kvHeads int
	openIt := modelPath != ""
	if !openIt && ckpt != "" { // a run directory records its model
		if rec, err := train.RecordedConfig(ckpt); err == nil {
			modelPath, openIt = rec.Model, true
		}
	}
	if openIt {
		m, err := openModel(modelPath)
		if err != nil {
			return err
		}
		headDim, kvHeads = m.Config.HeadDim, m.Config.KVHeads
		m.Close()
		if d := p.Meta["base_digest"]; d != "" && d != m.Digest {
			return fmt.Errorf("--model %s is not the base model of %s (%q, digest %.12s…)", modelPath, projPath, p.Meta["base_model"], d)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	kPath, vPath, err := train.ExportReference(p, headDim, kvHeads, dir)
	if err != nil {
		return err
	}
	fmt.Println(kPath)
	fmt.Println(vPath)
	return nil
}
