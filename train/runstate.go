package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/atomicfile"
	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/model"
)

// fingerprint is what defines a run's result: the configuration plus digests
// of the model and of the calibration tokens. It is stored in run.json and in
// every checkpoint.
type fingerprint struct {
	Config      Config `json:"config"`
	ModelDigest string `json:"model_digest"`
	DataDigest  string `json:"data_digest"`
	Layers      int    `json:"layers"`
	Hidden      int    `json:"hidden"`
	KVDim       int    `json:"kv_dim"`
	KRanks      []int  `json:"k_ranks"` // per layer
	VRanks      []int  `json:"v_ranks"` // per layer
	BaseName    string `json:"base_name"`
	Arch        string `json:"arch"`
}

// setting is one fingerprint field compared on resume.
type setting struct {
	name    string // the flag of cskv train, as the command line spells it; or the digest
	problem bool   // must match; otherwise only a warning
	value   func(fingerprint) any
}

// digests are compared on resume before the settings: the run's inputs.
var digests = []setting{
	{"model digest", true, func(f fingerprint) any { return f.ModelDigest }},
	{"data digest", true, func(f fingerprint) any { return f.DataDigest }},
	{"layer range", true, func(f fingerprint) any { return fmt.Sprint(f.Config.FirstLayer, f.Config.LastLayer) }},
}

// settings is the resume table, one row per flag of cskv train: problem
// fields must match, steering fields may change with a warning.
var settings = []setting{
	{"seq-len", true, func(f fingerprint) any { return f.Config.SeqLen }},
	{"calib-chunks", true, func(f fingerprint) any { return f.Config.CalibChunks }},
	{"random-chunks", true, func(f fingerprint) any { return f.Config.RandomPick }},
	{"holdout", true, func(f fingerprint) any { return f.Config.Holdout }},
	{"k-density", true, func(f fingerprint) any { return f.Config.KDensity }},
	{"v-density", true, func(f fingerprint) any { return f.Config.VDensity }},
	{"k-rank", true, func(f fingerprint) any { return f.Config.KRank }},
	{"v-rank", true, func(f fingerprint) any { return f.Config.VRank }},
	{"budget", true, func(f fingerprint) any { return f.Config.Budget }},
	{"objective", true, func(f fingerprint) any { return f.Config.Objective }},
	{"max-points", true, func(f fingerprint) any { return f.Config.MaxPoints }},
	{"alloc-window", true, func(f fingerprint) any { return f.Config.AllocWindow }},
	{"plan", true, // the ranks per layer, from --plan or --budget
		func(f fingerprint) any { return fmt.Sprint(f.KRanks, f.VRanks) }},
	{"init", true, func(f fingerprint) any { return f.Config.Init }},
	{"alpha", true, func(f fingerprint) any { return f.Config.Alpha }},
	{"ridge", true, func(f fingerprint) any { return f.Config.Ridge }},
	{"batch", true, func(f fingerprint) any { return f.Config.Batch }},
	{"seed", true, func(f fingerprint) any { return f.Config.Seed }},
	{"lambda-kv", true, func(f fingerprint) any { return f.Config.LambdaKV }},
	{"lambda-out", true, func(f fingerprint) any { return f.Config.LambdaOut }},
	{"out-seqs", true, func(f fingerprint) any { return f.Config.OutSeqs }},
	{"out-window", true, func(f fingerprint) any { return f.Config.OutWindow }},
	{"out-window-alt", true, func(f fingerprint) any { return f.Config.OutWindowAlt }},
	{"out-window-alt-steps", true, func(f fingerprint) any { return max(f.Config.OutWindowAltSteps, 1) }},
	{"window-mode", true, func(f fingerprint) any { return f.Config.Window }},
	{"k-bits", true, func(f fingerprint) any { return f.Config.KBits }},
	{"v-bits", true, func(f fingerprint) any { return f.Config.VBits }},
	{"k-quant", true, func(f fingerprint) any { return f.Config.KQuant }},
	{"quant-window", true, func(f fingerprint) any { return f.Config.QuantWindow }},
	{"quant-zero", true, func(f fingerprint) any { return f.Config.QuantZero }},
	{"precision", true, func(f fingerprint) any { return f.Config.Precision }},
	{"steps", false, func(f fingerprint) any { return f.Config.Steps }},
	{"lr", false, func(f fingerprint) any { return f.Config.LR }},
	{"schedule", false, func(f fingerprint) any { return f.Config.Schedule }},
	{"warmup", false, func(f fingerprint) any { return f.Config.Warmup }},
	{"save-every", false, func(f fingerprint) any { return f.Config.SaveEvery }},
	{"keep", false, func(f fingerprint) any { return f.Config.Keep }},
}

// ErrMismatch marks a resume whose problem-defining settings differ.
var ErrMismatch = errors.New("resume: setting differs from the checkpoint")

// ResumeFlags returns the flags of cskv train that a resume compares, in
// the resume table's order.
func ResumeFlags() []string {
	names := make([]string, len(settings))
	for i, s := range settings {
		names[i] = s.name
	}
	return names
}

// runState is the run directory and the run's progress: every finished
// layer and, after a mid-layer resume, the state of the layer in progress.
type runState struct {
	dir  string // "" = no checkpoints
	keep int
	fp   fingerprint
	log  logrus.FieldLogger
	done []doneLayer // finished layers first … first+len(done)−1: the next layer to train is next()
	cur  *layerState // the layer next() at the checkpoint resumed mid-layer (nil: from its start)
}

const runFile = "run.json"

// openRun prepares the run directory: a fresh run (refusing a directory that
// holds another run unless forced) or a resume from its latest checkpoint.
func openRun(cfg Config, m *model.Model, calib [][]int, kRanks, vRanks []int, log logrus.FieldLogger) (*runState, error) {
	fp := fingerprint{Config: cfg, ModelDigest: m.Digest, DataDigest: digestTokens(calib), Layers: m.Config.Layers,
		Hidden: m.Config.Hidden, KVDim: m.Config.KVDim(), KRanks: kRanks, VRanks: vRanks, BaseName: filepath.Base(m.Path), Arch: m.Config.Arch}
	fp.Config.Resume, fp.Config.Force, fp.Config.Out, fp.Config.Export, fp.Config.Plan, fp.Config.Stream = false, false, "", "", "", ""
	r := &runState{dir: cfg.Out, keep: cfg.Keep, fp: fp, log: log}
	if cfg.Out == "" {
		return r, nil
	}
	if cfg.Resume {
		if err := r.resume(); err != nil {
			return nil, err
		}
		return r, r.writeRunFile()
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("--out %s: %w", cfg.Out, err)
	}
	entries, err := os.ReadDir(cfg.Out)
	if err != nil {
		return nil, fmt.Errorf("--out %s: %w", cfg.Out, err)
	}
	var old []string
	for _, e := range entries {
		if e.Name() == runFile || strings.HasPrefix(e.Name(), "ckpt-") {
			old = append(old, e.Name())
		}
	}
	if len(old) > 0 && !cfg.Force {
		return nil, fmt.Errorf("--out %s holds another run (%s): use --resume to continue it or --force to replace it", cfg.Out, strings.Join(old, ", "))
	}
	for _, name := range old {
		if err := os.RemoveAll(filepath.Join(cfg.Out, name)); err != nil {
			return nil, fmt.Errorf("--force: %w", err)
		}
	}
	return r, r.writeRunFile()
}

func (r *runState) writeRunFile() error {
	raw, err := json.MarshalIndent(r.fp, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(r.dir, runFile), append(raw, '\n'))
}

// resume continues from the newest valid checkpoint, after checking that it
// belongs to this problem; newer broken ones are skipped with a warning.
func (r *runState) resume() error {
	if _, err := os.Stat(filepath.Join(r.dir, runFile)); err != nil {
		return fmt.Errorf("--resume %s: not a cskv run directory (%w)", r.dir, err)
	}
	var s snapshot
	path, st, err := checkpoints.LoadLatestValid(r.dir, func(path string, st *checkpoints.State) error {
		var err error
		s, err = decodeSnapshot(st, path)
		return err
	}, func(path string, err error) {
		r.log.WithFields(logrus.Fields{"checkpoint": path, "reason": err}).Warn("resume: skipping an invalid checkpoint")
	})
	if errors.Is(err, checkpoints.ErrNoCheckpoint) {
		// Stopped before its first checkpoint: the run starts from layer 0,
		// if run.json records this problem.
		var old fingerprint
		raw, rerr := os.ReadFile(filepath.Join(r.dir, runFile))
		if rerr == nil {
			rerr = json.Unmarshal(raw, &old)
		}
		if rerr != nil {
			return fmt.Errorf("--resume %s: %s unreadable: %w", r.dir, runFile, rerr)
		}
		if err := r.compare(old); err != nil {
			return err
		}
		r.log.WithField("dir", r.dir).Info("resume: no checkpoint yet; starting from layer 0")
		return nil
	}
	if err != nil {
		return fmt.Errorf("--resume %s: %w", r.dir, err)
	}
	if err := r.compare(s.fp); err != nil {
		return err
	}
	if st.NumLayers != r.fp.Layers {
		return fmt.Errorf("--resume %s: checkpoint for %d layers at layer %d, model has %d", path, st.NumLayers, st.Layer, r.fp.Layers)
	}
	r.done, r.cur = s.done, s.cur
	r.log.WithFields(logrus.Fields{"checkpoint": path, "layer": st.Layer, "step": st.Step}).Info("resuming")
	return nil
}

// compare applies the resume rules to the recorded fingerprint old: the
// digests and problem settings must agree, a changed steering setting is
// logged.
func (r *runState) compare(old fingerprint) error {
	for _, table := range [][]setting{digests, settings} {
		for _, set := range table {
			was, now := fmt.Sprint(set.value(old)), fmt.Sprint(set.value(r.fp))
			if was == now {
				continue
			}
			if set.problem {
				return fmt.Errorf("%w: %s was %s, now %s", ErrMismatch, set.name, was, now)
			}
			r.log.WithFields(logrus.Fields{"setting": set.name, "was": was, "now": now}).Warn("resume: steering setting changed")
		}
	}
	return nil
}

// resumed hands over the state of layer l saved mid-layer by the checkpoint
// resumed, or nil when l starts afresh.
func (r *runState) resumed(l int) *layerState {
	if r.cur == nil || l != r.next() {
		return nil
	}
	cur := r.cur
	r.cur = nil
	return cur
}

// next is the next layer to train: the first one after the finished ones.
func (r *runState) next() int { return r.fp.Config.FirstLayer + len(r.done) }

// finish records a finished layer and checkpoints the layer boundary.
func (r *runState) finish(d doneLayer) error {
	r.done = append(r.done, d)
	return r.save(nil)
}

// save writes a checkpoint of the finished layers and, mid-layer, of cur
// (the layer r.next()), then prunes the old ones.
func (r *runState) save(cur *layerState) error {
	if r.dir == "" {
		return nil
	}
	st, err := snapshot{fp: r.fp, done: r.done, cur: cur}.encode()
	if err != nil {
		return err
	}
	path, err := checkpoints.Save(r.dir, st)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	r.log.WithFields(logrus.Fields{"checkpoint": path, "layer": st.Layer, "step": st.Step}).Debug("checkpoint written")
	return checkpoints.Prune(r.dir, r.keep)
}
