package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/atomicfile"
	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/kv"
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
	KRank       int    `json:"k_rank"`
	VRank       int    `json:"v_rank"`
	BaseName    string `json:"base_name"`
	Arch        string `json:"arch"`
}

// setting is one configuration field compared on resume.
type setting struct {
	name    string // flag name
	problem bool   // must match; otherwise only a warning
	value   func(fingerprint) any
}

// settings is the resume table: problem-defining fields must match, steering
// fields may change with a warning.
var settings = []setting{
	{"model digest", true, func(f fingerprint) any { return f.ModelDigest }},
	{"data digest", true, func(f fingerprint) any { return f.DataDigest }},
	{"seq-len", true, func(f fingerprint) any { return f.Config.SeqLen }},
	{"calib-chunks", true, func(f fingerprint) any { return f.Config.CalibChunks }},
	{"random-pick", true, func(f fingerprint) any { return f.Config.RandomPick }},
	{"holdout", true, func(f fingerprint) any { return f.Config.Holdout }},
	{"k-density", true, func(f fingerprint) any { return f.Config.KDensity }},
	{"v-density", true, func(f fingerprint) any { return f.Config.VDensity }},
	{"k-rank", true, func(f fingerprint) any { return f.Config.KRank }},
	{"v-rank", true, func(f fingerprint) any { return f.Config.VRank }},
	{"init", true, func(f fingerprint) any { return f.Config.Init }},
	{"alpha", true, func(f fingerprint) any { return f.Config.Alpha }},
	{"ridge", true, func(f fingerprint) any { return f.Config.Ridge }},
	{"batch", true, func(f fingerprint) any { return f.Config.Batch }},
	{"seed", true, func(f fingerprint) any { return f.Config.Seed }},
	{"lambda-kv", true, func(f fingerprint) any { return f.Config.LambdaKV }},
	{"lambda-out", true, func(f fingerprint) any { return f.Config.LambdaOut }},
	{"out-seqs", true, func(f fingerprint) any { return f.Config.OutSeqs }},
	{"out-window", true, func(f fingerprint) any { return f.Config.OutWindow }},
	{"window-mode", true, func(f fingerprint) any { return f.Config.Window }},
	{"k-bits", true, func(f fingerprint) any { return f.Config.KBits }},
	{"v-bits", true, func(f fingerprint) any { return f.Config.VBits }},
	{"k-quant", true, func(f fingerprint) any { return f.Config.KQuant }},
	{"quant-window", true, func(f fingerprint) any { return f.Config.QuantWindow }},
	{"quant-zero", true, func(f fingerprint) any { return f.Config.QuantZero }},
	{"precision", true, func(f fingerprint) any { return f.Config.precision() }},
	{"steps", false, func(f fingerprint) any { return f.Config.Steps }},
	{"lr", false, func(f fingerprint) any { return f.Config.LR }},
	{"schedule", false, func(f fingerprint) any { return f.Config.Schedule }},
	{"warmup", false, func(f fingerprint) any { return f.Config.Warmup }},
	{"save-every", false, func(f fingerprint) any { return f.Config.SaveEvery }},
	{"keep", false, func(f fingerprint) any { return f.Config.Keep }},
}

// ErrMismatch marks a resume whose problem-defining settings differ.
var ErrMismatch = errors.New("resume: setting differs from the checkpoint")

// progress is the non-tensor part of a checkpoint's training state.
type progress struct {
	History []LayerInfo `json:"history"`           // finished layers
	Partial *LayerInfo  `json:"partial,omitempty"` // the layer in progress
	AdamT   int         `json:"adam_t"`
}

// runState is the run directory and where the run continues from.
type runState struct {
	dir  string // "" = no checkpoints
	keep int
	fp   fingerprint
	log  logrus.FieldLogger

	layer, step int          // continue at this layer and step
	finished    []kv.Factors // factors of layers < layer
	history     []LayerInfo  // reports of layers < layer
	current     kv.Factors   // the layer in progress (when step > 0)
	adam        *Adam
	rng         *rand.PCG
	partial     LayerInfo
}

const runFile = "run.json"

// openRun prepares the run directory: a fresh run (refusing a directory that
// holds another run unless forced) or a resume from its latest checkpoint.
func openRun(cfg Config, m *model.Model, calib [][]int, kRank, vRank int, log logrus.FieldLogger) (*runState, error) {
	fp := fingerprint{Config: cfg, ModelDigest: m.Digest, DataDigest: digestTokens(calib), Layers: m.Config.Layers,
		Hidden: m.Config.Hidden, KVDim: m.Config.KVDim(), KRank: kRank, VRank: vRank, BaseName: filepath.Base(m.Path), Arch: m.Config.Arch}
	fp.Config.Resume, fp.Config.Force, fp.Config.Out, fp.Config.Export = false, false, "", ""
	r := &runState{dir: cfg.Out, keep: cfg.Keep, fp: fp, log: log, finished: make([]kv.Factors, m.Config.Layers)}
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

// resume loads the latest checkpoint and checks it belongs to this problem.
func (r *runState) resume() error {
	if _, err := os.Stat(filepath.Join(r.dir, runFile)); err != nil {
		return fmt.Errorf("--resume %s: not a cskv run directory (%w)", r.dir, err)
	}
	// The newest checkpoint that loads and whose configuration decodes;
	// newer broken ones are skipped with a warning.
	var old fingerprint
	var prog progress
	path, st, err := checkpoints.LoadLatestValid(r.dir, func(path string, st *checkpoints.State) error {
		if err := json.Unmarshal(st.Config, &old); err != nil {
			return fmt.Errorf("configuration unreadable: %w", err)
		}
		if err := json.Unmarshal(st.History, &prog); err != nil {
			return fmt.Errorf("progress unreadable: %w", err)
		}
		return nil
	}, func(path string, err error) {
		r.log.WithFields(logrus.Fields{"checkpoint": path, "reason": err}).Warn("resume: skipping an invalid checkpoint")
	})
	if errors.Is(err, checkpoints.ErrNoCheckpoint) {
		// Stopped before its first checkpoint: the run starts from layer 0,
		// if run.json records this problem.
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
	if err := r.compare(old); err != nil {
		return err
	}
	if st.NumLayers != r.fp.Layers || st.Layer > st.NumLayers {
		return fmt.Errorf("--resume %s: checkpoint for %d layers at layer %d, model has %d", path, st.NumLayers, st.Layer, r.fp.Layers)
	}
	tensors := map[string][]float32{}
	for _, t := range st.Tensors {
		tensors[t.Name] = t.Data
	}
	get := func(name string) ([]float32, error) {
		v, ok := tensors[name]
		if !ok {
			return nil, fmt.Errorf("--resume %s: checkpoint lacks tensor %q", path, name)
		}
		return v, nil
	}
	readFactors := func(prefix string) (kv.Factors, error) {
		f := kv.Factors{KRank: r.fp.KRank, VRank: r.fp.VRank}
		var ts [4][]float32
		var err error
		for i, name := range kv.Names {
			if ts[i], err = get(prefix + name); err != nil {
				return f, err
			}
		}
		f.SetTensors(ts)
		return f, nil
	}
	r.layer, r.step = st.Layer, st.Step
	r.history = prog.History
	for l := 0; l < st.Layer; l++ {
		if r.finished[l], err = readFactors(fmt.Sprintf("layers.%d.", l)); err != nil {
			return err
		}
	}
	if st.Step > 0 {
		if r.current, err = readFactors("current."); err != nil {
			return err
		}
		r.adam = NewAdam(nil)
		r.adam.T = prog.AdamT
		for i := 0; i < 4; i++ {
			m, err := get(fmt.Sprintf("adam.m.%d", i))
			if err != nil {
				return err
			}
			v, err := get(fmt.Sprintf("adam.v.%d", i))
			if err != nil {
				return err
			}
			r.adam.M, r.adam.V = append(r.adam.M, m), append(r.adam.V, v)
		}
		r.rng = &rand.PCG{}
		if err := r.rng.UnmarshalBinary(st.RNG); err != nil {
			return fmt.Errorf("--resume %s: rng state: %w", path, err)
		}
		if prog.Partial != nil {
			r.partial = *prog.Partial
		}
	}
	r.log.WithFields(logrus.Fields{"checkpoint": path, "layer": st.Layer, "step": st.Step}).Info("resuming")
	return nil
}

// compare applies the resume rules to the recorded fingerprint old: problem
// settings must agree, a changed steering setting is logged.
func (r *runState) compare(old fingerprint) error {
	for _, s := range settings {
		was, now := fmt.Sprint(s.value(old)), fmt.Sprint(s.value(r.fp))
		if was == now {
			continue
		}
		if s.problem {
			return fmt.Errorf("%w: %s was %s, now %s", ErrMismatch, s.name, was, now)
		}
		r.log.WithFields(logrus.Fields{"setting": s.name, "was": was, "now": now}).Warn("resume: steering setting changed")
	}
	return nil
}

// finishLayer records a finished layer for later checkpoints.
func (r *runState) finishLayer(l int, f kv.Factors, info LayerInfo) {
	r.finished[l] = f
	r.history = append(r.history, info)
}

// save writes a checkpoint at (layer, step): every finished layer's factors
// and, mid-layer, the current factors, Adam moments and sampler state.
func (r *runState) save(layer, step int, cur *kv.Factors, adam *Adam, rng *rand.PCG, partial LayerInfo) error {
	if r.dir == "" {
		return nil
	}
	st := &checkpoints.State{Layer: layer, Step: step, NumLayers: r.fp.Layers, ModelDigest: r.fp.ModelDigest}
	var err error
	if st.Config, err = json.Marshal(r.fp); err != nil {
		return err
	}
	prog := progress{History: r.history}
	add := func(name string, data []float32) {
		st.Tensors = append(st.Tensors, checkpoints.Tensor{Name: name, Shape: []int{len(data)}, Data: data})
	}
	addFactors := func(prefix string, f kv.Factors) {
		for i, t := range f.Tensors() {
			add(prefix+kv.Names[i], t)
		}
	}
	for l := 0; l < layer && l < len(r.finished); l++ {
		addFactors(fmt.Sprintf("layers.%d.", l), r.finished[l])
	}
	if cur != nil {
		addFactors("current.", *cur)
		for i := range adam.M {
			add(fmt.Sprintf("adam.m.%d", i), adam.M[i])
			add(fmt.Sprintf("adam.v.%d", i), adam.V[i])
		}
		prog.AdamT = adam.T
		prog.Partial = &partial
		if st.RNG, err = rng.MarshalBinary(); err != nil {
			return err
		}
	}
	if st.History, err = json.Marshal(prog); err != nil {
		return err
	}
	path, err := checkpoints.Save(r.dir, st)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	r.log.WithFields(logrus.Fields{"checkpoint": path, "layer": layer, "step": step}).Debug("checkpoint written")
	return checkpoints.Prune(r.dir, r.keep)
}
