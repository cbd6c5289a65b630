package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/schollz/progressbar/v3"
	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/flagfile"
	"github.com/cskv/cskv/internal/plot"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// registerTraining registers the training flags of train and capture.
func registerTraining(fs *flag.FlagSet, cfg *train.Config) {
	fs.IntVar(&cfg.Steps, "steps", cfg.Steps, "Adam steps per layer")
	fs.Float64Var(&cfg.LR, "lr", cfg.LR, "learning rate")
	fs.Var(&cfg.Schedule, "schedule", "learning-rate schedule: constant (default) or cosine (with --warmup)")
	fs.IntVar(&cfg.Warmup, "warmup", cfg.Warmup, "warm-up steps of the cosine schedule")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "sequences per step")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the batch sampler (and of --random-chunks)")
	fs.Float64Var(&cfg.LambdaKV, "lambda-kv", cfg.LambdaKV, "weight of the KV term MSE(K,K̂)+MSE(V,V̂)")
	fs.Float64Var(&cfg.LambdaOut, "lambda-out", cfg.LambdaOut, "weight of the layer-output term MSE(out,out̂) (0 = the paper's loss)")
	fs.IntVar(&cfg.OutSeqs, "out-seqs", cfg.OutSeqs, "sequences of each batch that feed the output term")
	fs.IntVar(&cfg.OutWindow, "out-window", cfg.OutWindow, "bi-branch window inside the output term (0 = every token reconstructed)")
	fs.IntVar(&cfg.OutWindowAlt, "out-window-alt", cfg.OutWindowAlt, "bi-branch window inside the output term on the alternate steps, --out-window on the others (0 = off)")
	fs.IntVar(&cfg.OutWindowAltSteps, "out-window-alt-steps", cfg.OutWindowAltSteps, "alternate steps (at --out-window-alt) after each step at --out-window (0 = 1)")
	fs.IntVar(&cfg.SaveEvery, "save-every", cfg.SaveEvery, "checkpoint every k steps (0 = only at layer ends)")
	fs.IntVar(&cfg.Keep, "keep", cfg.Keep, "checkpoints kept")
}

// registerProblem registers the flags shared by init and train.
func registerProblem(fs *flag.FlagSet, c *train.Config) {
	fs.StringVar(&c.Model, "model", c.Model, "model: GGUF file or Hugging Face directory (default: the embedded synthetic model; shape:NAME[:LAYERS], NAME one of "+model.ShapeNames()+": random weights of that shape, for memory and speed measurements)")
	fs.StringVar(&c.Data, "data", c.Data, "calibration data: text, .ids or llm.c .bin (default with the synthetic model: sampled from it)")
	fs.Var(&c.DataFormat, "data-format", "data format: auto, text, ids or bin")
	fs.IntVar(&c.SeqLen, "seq-len", c.SeqLen, "tokens per calibration sequence (the synthetic default uses 128 unless set)")
	fs.IntVar(&c.CalibChunks, "calib-chunks", c.CalibChunks, "calibration sequences: consecutive chunks of the data, as the evaluation protocol cuts them")
	fs.BoolVar(&c.RandomPick, "random-chunks", c.RandomPick, "pick the calibration chunks at random (seeded by --seed) instead of the first ones")
	fs.IntVar(&c.Holdout, "holdout", c.Holdout, "held-out chunks (after the calibration ones) for before/after errors; 0 = none")
	fs.Float64Var(&c.KDensity, "k-density", c.KDensity, "key density in (0, 1): rank = int(density·head_dim)·kv_heads")
	fs.Float64Var(&c.VDensity, "v-density", c.VDensity, "value density in (0, 1)")
	fs.IntVar(&c.KRank, "k-rank", c.KRank, "explicit key rank in [1, kv_dim] (overrides --k-density)")
	fs.IntVar(&c.VRank, "v-rank", c.VRank, "explicit value rank in [1, kv_dim] (overrides --v-density)")
	fs.Var(&c.Init, "init", "initialisation: svd, asvd or whiten")
	fs.Float64Var(&c.Alpha, "alpha", c.Alpha, "ASVD exponent α")
	fs.Float64Var(&c.Ridge, "ridge", c.Ridge, "whitening ridge (0 = automatic)")
	fs.IntVar(&c.KBits, "k-bits", c.KBits, "quantisation-aware training: key feature bits (2, 3, 4, 8; 16 = off)")
	fs.IntVar(&c.VBits, "v-bits", c.VBits, "value feature bits (2, 3, 4, 8; 16 = off)")
	fs.Var(&c.KQuant, "k-quant", "key quantisation groups: channel (default: KIVI, per channel over --quant-window tokens) or token")
	fs.IntVar(&c.QuantWindow, "quant-window", c.QuantWindow, "tokens per per-channel key group")
	fs.Var(&c.QuantZero, "quant-zero", "zero point: free (default) or clamp (the reference code's rule)")
	fs.Var(&c.Window, "window-mode", "bi-branch rule: block (default, the reference code's) or sliding")
	fs.Var(&c.DType, "dtype", "exported factor dtype: f32 (default), f16 or bf16")
	fs.Var(&c.Precision, "precision", precisionUsage+"; recorded, a resume keeps it")
}

// trainEnv wires logging and a progress bar to train.Run.
func trainEnv(lf *logFlags, log *logrus.Logger, steps int) train.Env {
	var bar, layers *progressbar.ProgressBar
	return train.Env{
		Log: log,
		OnPhase: func(phase string, l int) {
			log.WithFields(logrus.Fields{"layer": l, "phase": phase}).Debug("phase")
			if phase == "capture" && steps == 0 && layers == nil { // init: a bar over layers
				layers = lf.bar(-1, "capture + init, layers")
			}
			if phase == "train" && steps > 0 && !lf.quiet {
				bar = lf.bar(steps, fmt.Sprintf("layer %d", l))
			}
		},
		OnLayer: func(info train.LayerInfo) {
			if layers != nil {
				layers.Add(1)
			}
		},
		OnStep: func(s train.StepInfo) {
			log.WithFields(logrus.Fields{"layer": s.Layer, "step": s.Step, "loss_kv": s.Loss.KV, "loss_out": s.Loss.Out, "lr": s.LR}).Debug("step")
			if bar != nil {
				bar.Describe(fmt.Sprintf("layer %d/%d kv %.3g out %.3g", s.Layer+1, s.Layers, s.Loss.KV, s.Loss.Out))
				bar.Set(s.Step)
				if s.Step == s.Steps {
					bar.Finish()
					bar = nil
				}
			}
		},
	}
}

func runTrain(ctx context.Context, c *cli, args []string) error {
	return trainOrInit(ctx, c, args, true)
}

func runInit(ctx context.Context, c *cli, args []string) error {
	return trainOrInit(ctx, c, args, false)
}

func trainOrInit(ctx context.Context, c *cli, args []string, training bool) error {
	cfg := train.Defaults()
	registerProblem(c.FlagSet, &cfg)
	registerAllocation(c.FlagSet, &cfg)
	c.StringVar(&cfg.Plan, "plan", cfg.Plan, "plan file with the ranks per layer and side (from cskv allocate); overrides densities and ranks")
	out := c.String("out", "", "output: the projections file (init) or the run directory (train; default cskv-run)")
	var rf reportFlags
	rf.register(c.FlagSet, "evaluation data for the final report's perplexity (train)", "print the report as one JSON object on stdout")
	streamMemoryFlag(c.FlagSet, &cfg)
	var from *string
	var shard *int
	if training {
		registerTraining(c.FlagSet, &cfg)
		from = c.String("from", "", "train one shard of a captured sharded run (cskv capture --out DIR): its settings come from DIR/shards.json")
		shard = c.Int("shard", -1, "with --from: the shard to train (default: $JOB_COMPLETION_INDEX, else $SLURM_ARRAY_TASK_ID)")
		c.BoolVar(&cfg.Resume, "resume", false, "continue the run in --out from its latest checkpoint")
		c.BoolVar(&cfg.Force, "force", false, "replace a run directory that holds another run")
	}
	c.configFlag()
	log, err := c.startRun(args, &cfg)
	if err != nil {
		return err
	}
	if training && *from != "" {
		return trainShard(ctx, c, log, *from, *shard, cfg.Resume, cfg.StreamMemory)
	}
	if training && !flagSet(c.FlagSet, "out-seqs") {
		cfg.OutSeqs = min(cfg.OutSeqs, cfg.Batch) // the default: the whole batch
	}
	if training && cfg.Resume { // the run directory records the rest
		dir := *out
		if dir == "" {
			dir = "cskv-run"
		}
		if err := applyRecorded(c.FlagSet, &cfg, dir); err != nil {
			return err
		}
	}
	if training {
		if cfg.Steps < 1 {
			return fmt.Errorf("%w: --steps %d: must be ≥ 1 (cskv init initialises without training)", errUsage, cfg.Steps)
		}
		cfg.Out = *out
		if cfg.Out == "" { // the default scratch directory: a new run replaces the last one
			cfg.Out, cfg.Force = "cskv-run", !cfg.Resume
			log.WithField("out", cfg.Out).Info("no --out given: writing the run to cskv-run (replacing an earlier run there)")
		}
	} else {
		cfg.Steps = 0
		if *out == "" {
			return fmt.Errorf("%w: --out P.safetensors is required", errUsage)
		}
		cfg.Export = *out
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	evalSrc, err := rf.source(cfg)
	if err != nil {
		return err
	}
	res, err := train.Run(ctx, cfg, trainEnv(&c.lf, log, cfg.Steps))
	if err != nil {
		return err
	}
	if res.Plan != nil && cfg.Out != "" {
		if err := res.Plan.Write(filepath.Join(cfg.Out, "plan.json")); err != nil {
			return err
		}
		if err := allocationFigure(res.Plan, filepath.Join(cfg.Out, "plan.png")); err != nil {
			return err
		}
	}
	rep, err := eval.EvaluateResult(ctx, res, evalSrc, rf.chunks, rf.window, log)
	if err != nil {
		return err
	}
	if training {
		if err := lossPlots(cfg.Out, res); err != nil {
			return err
		}
		if err := rep.Write(filepath.Join(cfg.Out, "report.json")); err != nil {
			return err
		}
		header := "cskv train: the effective configuration of the run in this directory.\nRerun it with: cskv train --config " + filepath.Join(cfg.Out, "config.yaml") + " --out NEWDIR"
		if err := flagfile.Write(filepath.Join(cfg.Out, "config.yaml"), c.FlagSet, configNames(c.FlagSet), header); err != nil {
			return err
		}
	}
	return rf.print(rep)
}

// lossPlots writes DIR/plots/layer-N-loss.png with both loss terms.
func lossPlots(dir string, res *train.Result) error {
	pd := filepath.Join(dir, "plots")
	if err := os.MkdirAll(pd, 0o755); err != nil {
		return err
	}
	for _, l := range res.Layers {
		if len(l.CurveKV) == 0 {
			continue
		}
		curves := []plot.Series{{Name: "KV term", Values: l.CurveKV}}
		if res.Config.LambdaOut > 0 {
			curves = append(curves, plot.Series{Name: "output term", Values: l.CurveOut})
		}
		p := filepath.Join(pd, fmt.Sprintf("layer-%d-loss.png", l.Layer))
		if err := plot.LossPNG(p, fmt.Sprintf("layer %d training loss", l.Layer), curves); err != nil {
			return err
		}
	}
	return nil
}

func runExport(ctx context.Context, c *cli, args []string) error {
	ckpt := c.String("checkpoint", "", "checkpoint directory (a run's last one, e.g. cskv-run/ckpt-L05-S000000), or a run directory for its latest")
	out := c.String("out", "", "projections file to write (--format cskv-ref: the directory for the .ckpt pair)")
	dtype := train.DTypeF32
	c.Var(&dtype, "dtype", "factor dtype: f32 (default), f16 or bf16")
	format := c.String("format", "cskv", "cskv (a projections file) or cskv-ref (the CSKV reference code's pair of torch .ckpt files, float32)")
	projPath := c.String("projections", "", "with --format cskv-ref: convert this projections file instead of a checkpoint")
	modelPath := c.String("model", "", "with --format cskv-ref: the base model, for head_dim and kv_heads (default: the one a run directory records)")
	if _, err := c.start(args); err != nil {
		return err
	}
	switch *format {
	case "cskv":
	case "cskv-ref":
		if (*ckpt == "") == (*projPath == "") || *out == "" {
			return fmt.Errorf("%w: --format cskv-ref needs --out DIR and one of --checkpoint or --projections", errUsage)
		}
		if dtype != train.DTypeF32 {
			return fmt.Errorf("%w: --format cskv-ref writes float32 (the reference code trains in float32); --dtype %s is not supported", errUsage, dtype)
		}
		kPath, vPath, err := train.ExportReferenceFrom(*ckpt, *projPath, *modelPath, *out)
		if err != nil {
			return err
		}
		fmt.Println(kPath)
		fmt.Println(vPath)
		return nil
	default:
		return fmt.Errorf("%w: --format %q: want cskv or cskv-ref", errUsage, *format)
	}
	if *ckpt == "" || *out == "" {
		return fmt.Errorf("%w: --checkpoint and --out are required", errUsage)
	}
	return train.ExportCheckpoint(*ckpt, *out, dtype)
}
