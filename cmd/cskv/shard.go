package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/train"
)

// shardIndexVars are where a scheduler puts the index of an array task, in
// the order trainShard reads them when --shard is not given.
var shardIndexVars = []string{
	"JOB_COMPLETION_INDEX", // Kubernetes Indexed Job
	"SLURM_ARRAY_TASK_ID",  // Slurm job array
}

// runCapture is stage 1 of a sharded run (train.CaptureShards).
func runCapture(ctx context.Context, c *cli, args []string) error {
	cfg := train.Defaults()
	registerProblem(c.FlagSet, &cfg)
	registerTraining(c.FlagSet, &cfg)
	registerAllocation(c.FlagSet, &cfg)
	c.StringVar(&cfg.Plan, "plan", cfg.Plan, "plan file with the ranks per layer and side (from cskv allocate); copied to DIR/plan.json for the shards")
	shards := c.Int("shards", 0, "number of shards, of as equal a number of layers as possible")
	bounds := c.String("boundaries", "", "explicit shard boundaries, comma-separated, from 0 to the number of layers (e.g. 0,2,4,5)")
	out := c.String("out", "", "shared directory every shard reads (streams, shards.json) and writes (shard-k)")
	streamMemoryFlag(c.FlagSet, &cfg)
	c.configFlag()
	log, err := c.startRun(args, &cfg)
	if err != nil {
		return err
	}
	if !flagSet(c.FlagSet, "out-seqs") {
		cfg.OutSeqs = min(cfg.OutSeqs, cfg.Batch) // as train: the whole batch
	}
	if *out == "" {
		return fmt.Errorf("%w: --out DIR is required", errUsage)
	}
	var b []int
	switch {
	case *bounds != "" && *shards != 0:
		return fmt.Errorf("%w: --shards and --boundaries both given", errUsage)
	case *bounds != "":
		for _, f := range strings.Split(*bounds, ",") {
			v, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return fmt.Errorf("%w: --boundaries %q: %q is not an integer", errUsage, *bounds, f)
			}
			b = append(b, v)
		}
	case *shards < 1:
		return fmt.Errorf("%w: --shards N (≥ 1) or --boundaries is required", errUsage)
	}
	man, err := train.CaptureShards(ctx, cfg, *shards, b, *out, train.Env{Log: log})
	if err != nil {
		return err
	}
	log.WithFields(logrus.Fields{"dir": *out, "boundaries": man.Boundaries}).Info("captured: train each shard with cskv train --from DIR --shard k, then cskv merge DIR")
	return nil
}

// trainShard is stage 2: train shard k of the sharded run in dir. A shard
// directory that already holds the shard's run is resumed.
func trainShard(ctx context.Context, c *cli, log *logrus.Logger, dir string, k int, resume bool, streamMemory int64) error {
	allowed := map[string]bool{"from": true, "shard": true, "resume": true, "stream-memory": true}
	probe := flag.NewFlagSet("", flag.ContinueOnError)
	(&logFlags{}).register(probe)
	probe.VisitAll(func(f *flag.Flag) { allowed[f.Name] = true })
	var bad error
	c.Visit(func(f *flag.Flag) {
		if !allowed[f.Name] && bad == nil {
			bad = fmt.Errorf("%w: --%s with --from: a shard takes its settings from %s", errUsage, f.Name, filepath.Join(dir, "shards.json"))
		}
	})
	if bad != nil {
		return bad
	}
	if k < 0 {
		for _, name := range shardIndexVars {
			v := os.Getenv(name)
			if v == "" {
				continue
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("%w: $%s %q: not a shard index", errUsage, name, v)
			}
			k = n
			break
		}
	}
	if k < 0 {
		return fmt.Errorf("%w: --from needs --shard k, $JOB_COMPLETION_INDEX or $SLURM_ARRAY_TASK_ID", errUsage)
	}
	cfg, err := train.ShardConfig(dir, k)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, "run.json")); err == nil {
		resume = true // a restarted pod or requeued task continues
	}
	cfg.Resume, cfg.StreamMemory = resume, streamMemory
	log.WithFields(logrus.Fields{"shard": k, "layers": fmt.Sprintf("[%d, %d)", cfg.FirstLayer, cfg.LastLayer), "dir": cfg.Out}).Info("training shard")
	res, err := train.Run(ctx, cfg, trainEnv(&c.lf, log, cfg.Steps))
	if err != nil {
		return fmt.Errorf("shard %d: %w", k, err)
	}
	log.WithFields(logrus.Fields{"shard": k, "layers": len(res.Layers), "seconds": fmt.Sprintf("%.1f", res.Seconds)}).Info("shard finished")
	return nil
}

// runMerge is stage 3 (train.Merge).
func runMerge(ctx context.Context, c *cli, args []string) error {
	out := c.String("out", "", "projections file to write")
	var rf reportFlags
	rf.register(c.FlagSet, "evaluation data: also evaluate the merged projections and write DIR/report.json, as train does",
		"with --eval-data: print the report as one JSON object on stdout")
	var dir string
	for { // DIR may stand before, between or after the flags
		if err := c.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if c.NArg() == 0 {
			break
		}
		if dir != "" {
			return fmt.Errorf("%w: more than one directory: %q and %q", errUsage, dir, c.Arg(0))
		}
		dir, args = c.Arg(0), c.Args()[1:]
	}
	log, err := c.ready()
	if err != nil {
		return err
	}
	if dir == "" || *out == "" {
		return fmt.Errorf("%w: want cskv merge DIR --out projections.safetensors", errUsage)
	}
	if rf.chunks < 0 {
		return fmt.Errorf("%w: --eval-chunks %d: must be ≥ 0", errUsage, rf.chunks)
	}
	res, err := train.Merge(dir, *out)
	if err != nil {
		return err
	}
	log.WithField("projections", *out).Info("merged")
	if rf.data == "" {
		return nil
	}
	evalSrc, err := rf.source(res.Config)
	if err != nil {
		return err
	}
	rep, err := eval.EvaluateResult(ctx, res, evalSrc, rf.chunks, rf.window, log)
	if err != nil {
		return err
	}
	if err := rep.Write(filepath.Join(dir, "report.json")); err != nil {
		return err
	}
	return rf.print(rep)
}
