package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/alloc"
	"github.com/cskv/cskv/atomicfile"
	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/model/safetensors"
)

// A sharded run splits the layers into ranges [b_k, b_k+1) trained by
// separate processes (README, "Beyond one machine"): CaptureShards runs the
// frozen forward once and stores the residual stream at every shard's first
// layer in a shared directory; Run with ShardConfig(dir, k) trains shard k
// from its stream in dir/shard-k; Merge checks the shards and exports the
// projections, byte-identical to a single-process Run with the same
// settings (every layer's training reads only its own inputs and its own
// seeded sampler).

// ShardManifest is DIR/shards.json, written last by CaptureShards: the run's
// settings and digests, the shard boundaries and every stream file's digest.
type ShardManifest struct {
	Run        fingerprint `json:"run"`            // Config with no layer range, Out, Stream
	Boundaries []int       `json:"boundaries"`     // 0 = b_0 < b_1 < … < b_N = layers
	Streams    []string    `json:"streams"`        // sha256 of stream-k.safetensors, per shard
	Plan       string      `json:"plan,omitempty"` // the rank plan (--budget, allocated once here, or --plan), relative to DIR
	Complete   bool        `json:"complete"`       // every stream written: shards may start
}

const manifestFile = "shards.json"

func streamFile(dir string, k int) string {
	return filepath.Join(dir, fmt.Sprintf("stream-%d.safetensors", k))
}

// ShardDir is the run directory of shard k.
func ShardDir(dir string, k int) string { return filepath.Join(dir, fmt.Sprintf("shard-%d", k)) }

// EvenBoundaries splits layers into n contiguous ranges whose sizes differ by
// at most one (the first ones larger).
func EvenBoundaries(layers, n int) ([]int, error) {
	if n < 1 || n > layers {
		return nil, fmt.Errorf("--shards %d: want 1 … %d (the model's layers)", n, layers)
	}
	b := []int{0}
	for k := 0; k < n; k++ {
		size := layers / n
		if k < layers%n {
			size++
		}
		b = append(b, b[k]+size)
	}
	return b, nil
}

// checkBoundaries checks 0 = b_0 < b_1 < … < b_N = layers.
func checkBoundaries(b []int, layers int) error {
	if len(b) < 2 || b[0] != 0 || b[len(b)-1] != layers {
		return fmt.Errorf("--boundaries %v: want 0 < … < %d (the model's layers)", b, layers)
	}
	for i := 1; i < len(b); i++ {
		if b[i] <= b[i-1] {
			return fmt.Errorf("--boundaries %v: not increasing at %d", b, b[i])
		}
	}
	return nil
}

// CaptureShards is stage 1 of a sharded run: it cuts the calibration and
// held-out sequences as Run does, walks the frozen model through layers
// 0 … b_N−1 − 1 and writes the residual streams h (N·T, D) and hHeld
// (H·T, D) at every b_k as dir/stream-k.safetensors (float32), then
// dir/shards.json after each. Boundaries nil = EvenBoundaries(layers,
// shards). A capture interrupted and run again with the same settings
// continues from its last valid stream.
func CaptureShards(ctx context.Context, cfg Config, shards int, boundaries []int, dir string, env Env) (*ShardManifest, error) {
	env = env.withDefaults()
	if cfg.FirstLayer != 0 || cfg.LastLayer != 0 || cfg.Stream != "" {
		return nil, fmt.Errorf("capture: the configuration already names a layer range")
	}
	cfg.Out, cfg.Export, cfg.Resume, cfg.Force = dir, "", false, false
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, closeModel, err := cfg.open()
	if err != nil {
		return nil, err
	}
	defer closeModel()
	if boundaries == nil {
		if boundaries, err = EvenBoundaries(m.Config.Layers, shards); err != nil {
			return nil, err
		}
	} else if err := checkBoundaries(boundaries, m.Config.Layers); err != nil {
		return nil, err
	}
	calib, held, err := calibration(m, cfg)
	if err != nil {
		return nil, err
	}
	kRanks, vRanks, plan, err := layerRanks(ctx, m.Config, cfg, env)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--out %s: %w", dir, err)
	}
	var planFile string
	if plan != nil { // every shard reads the ranks from here
		planFile = "plan.json"
		if err := plan.Write(filepath.Join(dir, planFile)); err != nil {
			return nil, err
		}
	}
	run, err := openRun(Config{}, m, calib, kRanks, vRanks, env.Log) // fingerprint only: no directory
	if err != nil {
		return nil, err
	}
	man := &ShardManifest{Run: run.fp, Boundaries: boundaries, Plan: planFile}
	man.Run.Config = cfg
	man.Run.Config.Out = ""
	n := len(boundaries) - 1
	shard, err := resumeCapture(dir, man) // streams 0 … shard−1 are already written
	if err != nil {
		return nil, err
	}
	if shard == n {
		env.Log.WithField("dir", dir).Info("capture: already complete")
		return man, nil
	}
	from := Config{}
	if shard > 0 { // continue from the last stream written
		from.Stream = streamFile(dir, shard-1)
		env.Log.WithFields(logrus.Fields{"dir": dir, "layer": boundaries[shard-1]}).Info("capture: resuming")
	}
	from.Out, from.StreamMemory, from.SeqLen = dir, cfg.StreamMemory, cfg.SeqLen
	h, hHeld, start, err := startStreams(from, m, calib, held, boundaries[max(shard-1, 0)])
	if err != nil {
		return nil, err
	}
	defer h.close()
	defer hHeld.close()
	for l := start; shard < n; l++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("capture: interrupted at layer %d (rerun it to continue): %w", l, err)
		}
		if l == boundaries[shard] {
			env.OnPhase("capture", l)
			sum, err := writeStream(streamFile(dir, shard), h, hHeld, l, man.Run)
			if err != nil {
				return nil, err
			}
			man.Streams = append(man.Streams, sum)
			shard++
			man.Complete = shard == n
			if err := writeManifest(dir, man); err != nil {
				return nil, err
			}
			if man.Complete {
				break
			}
		}
		blk, err := m.Block(l)
		if err != nil {
			return nil, err
		}
		env.OnPhase("advance", l)
		if err := errors.Join(h.advance(m.Config, blk), hHeld.advance(m.Config, blk)); err != nil {
			return nil, fmt.Errorf("capture: layer %d: advance: %w", l, err)
		}
	}
	return man, nil
}

// writeManifest writes dir/shards.json atomically (after every stream, so
// that an interrupted capture continues from the last one).
func writeManifest(dir string, man *ShardManifest) error {
	raw, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, manifestFile), append(raw, '\n'))
}

// resumeCapture returns how many of man's streams an earlier capture of the
// same run left in dir, valid by their digests, taking their digests into
// man; 0 for a fresh directory. A directory holding another capture is an
// error.
func resumeCapture(dir string, man *ShardManifest) (int, error) {
	raw, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var old ShardManifest
	if err := json.Unmarshal(raw, &old); err != nil {
		return 0, fmt.Errorf("--out %s: %s unreadable (%v): remove it or use another directory", dir, manifestFile, err)
	}
	was, _ := json.Marshal(ShardManifest{Run: old.Run, Boundaries: old.Boundaries, Plan: old.Plan})
	now, _ := json.Marshal(ShardManifest{Run: man.Run, Boundaries: man.Boundaries, Plan: man.Plan})
	if string(was) != string(now) {
		return 0, fmt.Errorf("--out %s holds another capture (other model, data, settings or boundaries): use another directory", dir)
	}
	k := 0
	for ; k < len(old.Streams) && k < len(man.Boundaries)-1; k++ {
		if sum, err := checkpoints.FileSHA256(streamFile(dir, k)); err != nil || sum != old.Streams[k] {
			break // rewritten from here on
		}
	}
	man.Streams = old.Streams[:k]
	man.Complete = k == len(man.Boundaries)-1
	return k, nil
}

// writeStream stores the streams at layer l (atomically) and returns the
// file's sha256.
func writeStream(path string, h, hHeld *stream, l int, fp fingerprint) (string, error) {
	ts := []safetensors.Tensor{{Name: "h", Shape: []int{h.rows(), fp.Hidden}, DType: safetensors.F32, Fill: h.readFlat}}
	if hHeld.nSeq > 0 {
		ts = append(ts, safetensors.Tensor{Name: "h_held", Shape: []int{hHeld.rows(), fp.Hidden}, DType: safetensors.F32, Fill: hHeld.readFlat})
	}
	meta := map[string]string{"layer": strconv.Itoa(l), "base_digest": fp.ModelDigest, "data_digest": fp.DataDigest}
	if err := safetensors.Write(path, ts, meta); err != nil {
		return "", err
	}
	return checkpoints.FileSHA256(path)
}

// ReadManifest reads dir/shards.json.
func ReadManifest(dir string) (*ShardManifest, error) {
	path := filepath.Join(dir, manifestFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: not a captured sharded run (run cskv capture first): %w", dir, err)
	}
	var man ShardManifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !man.Complete {
		return nil, fmt.Errorf("%s: the capture is unfinished (%d of %d streams): rerun cskv capture to complete it", path, len(man.Streams), len(man.Boundaries)-1)
	}
	if err := checkBoundaries(man.Boundaries, man.Run.Layers); err != nil || len(man.Streams) != len(man.Boundaries)-1 {
		return nil, fmt.Errorf("%s: boundaries %v and %d streams do not describe %d layers", path, man.Boundaries, len(man.Streams), man.Run.Layers)
	}
	return &man, nil
}

// ShardConfig is the configuration of shard k of the sharded run in dir:
// the captured run's settings with the layer range [b_k, b_k+1), the stream
// at b_k (its digest checked) and the run directory dir/shard-k.
func ShardConfig(dir string, k int) (Config, error) {
	man, err := ReadManifest(dir)
	if err != nil {
		return Config{}, err
	}
	if n := len(man.Boundaries) - 1; k < 0 || k >= n {
		return Config{}, fmt.Errorf("shard %d: %s has shards 0 … %d", k, dir, n-1)
	}
	path := streamFile(dir, k)
	sum, err := checkpoints.FileSHA256(path)
	if err != nil {
		return Config{}, fmt.Errorf("shard %d: %w", k, err)
	}
	if sum != man.Streams[k] {
		return Config{}, fmt.Errorf("shard %d: stream %s fails its sha256 (%s, manifest %s)", k, path, sum, man.Streams[k])
	}
	cfg := man.Run.Config
	cfg.FirstLayer, cfg.LastLayer, cfg.Stream, cfg.Out = man.Boundaries[k], man.Boundaries[k+1], path, ShardDir(dir, k)
	if man.Plan != "" { // the capture's plan, not a new allocation
		cfg.Plan, cfg.Budget = filepath.Join(dir, man.Plan), 0
	}
	return cfg, nil
}

// startStreams returns the residual streams h (N·T, D) and hHeld (H·T, D)
// at the layer Run starts from: embedded at layer 0 or, with cfg.Stream, read
// at cfg.FirstLayer from a CaptureShards stream file.
//
// The streams are in memory or spilled as openStreams decides; the caller
// closes them.
func startStreams(cfg Config, m *model.Model, calib, held [][]int, first int) (h, hHeld *stream, start int, err error) {
	if h, hHeld, err = openStreams(cfg, m, calib, held); err != nil {
		return nil, nil, 0, err
	}
	if cfg.Stream == "" {
		return h, hHeld, 0, nil
	}
	if err := loadStreams(cfg.Stream, m, calib, first, h, hHeld); err != nil {
		h.close()
		hHeld.close()
		return nil, nil, 0, err
	}
	return h, hHeld, first, nil
}

// loadStreams replaces h and hHeld by the streams a CaptureShards stream
// file holds at layer first, checked to be of this model and data.
func loadStreams(path string, m *model.Model, calib [][]int, first int, h, hHeld *stream) error {
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	meta := f.Metadata()
	if meta["layer"] != strconv.Itoa(first) || meta["base_digest"] != m.Digest || meta["data_digest"] != digestTokens(calib) {
		return fmt.Errorf("stream %s: for layer %s of model %s, data %s; this run starts at layer %d of model %s, data %s",
			path, meta["layer"], meta["base_digest"], meta["data_digest"], first, m.Digest, digestTokens(calib))
	}
	for _, s := range []struct {
		name string
		st   *stream
	}{{"h", h}, {"h_held", hHeld}} {
		if s.st.nSeq == 0 {
			continue
		}
		if ti, ok := f.Info(s.name); !ok || ti.NumElements() != s.st.rows()*s.st.D {
			return fmt.Errorf("stream %s: no tensor %s of %d values (%d rows × %d)", path, s.name, s.st.rows()*s.st.D, s.st.rows(), s.st.D)
		}
		chunk := scanRows(s.st.D)
		buf := s.st.scratch(chunk)
		for r0 := 0; r0 < s.st.rows(); r0 += chunk {
			v := s.st.view(r0, min(chunk, s.st.rows()-r0), buf)
			if err := f.ReadFloat32At(s.name, v, r0*s.st.D); err != nil {
				return fmt.Errorf("stream %s: %w", path, err)
			}
			if err := s.st.put(r0, v); err != nil {
				return fmt.Errorf("stream %s: %w", path, err)
			}
		}
	}
	return nil
}

// Merge is stage 3 of a sharded run: it checks that the shards in dir cover
// every layer exactly once, each finished, with the manifest's model digest,
// data digest and settings, and writes the projections file out, as a
// single-process Run would have. The Result holds the run's configuration,
// every layer's report and the projections file (PeakRSS and Seconds are
// the merge's own).
func Merge(dir, out string) (*Result, error) {
	start := time.Now()
	man, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	n := len(man.Boundaries) - 1
	if extra, _ := filepath.Glob(filepath.Join(dir, "shard-*")); len(extra) > n {
		for _, e := range extra {
			var k int
			if _, err := fmt.Sscanf(filepath.Base(e), "shard-%d", &k); err != nil || k < 0 || k >= n || filepath.Base(e) != filepath.Base(ShardDir(dir, k)) {
				return nil, fmt.Errorf("merge %s: %s is not one of the %d shards of the manifest (a duplicate or a stray run)", dir, e, n)
			}
		}
	}
	var done []doneLayer
	for k := 0; k < n; k++ {
		sd := ShardDir(dir, k)
		a, b := man.Boundaries[k], man.Boundaries[k+1]
		if _, err := os.Stat(filepath.Join(sd, runFile)); err != nil {
			return nil, fmt.Errorf("merge %s: shard %d (layers [%d, %d)) is missing: no %s", dir, k, a, b, filepath.Join(sd, runFile))
		}
		var s snapshot
		path, _, err := checkpoints.LoadLatestValid(sd, func(path string, st *checkpoints.State) error {
			var err error
			s, err = decodeSnapshot(st, path)
			return err
		}, func(string, error) {})
		if err != nil {
			return nil, fmt.Errorf("merge %s: shard %d (layers [%d, %d)) in %s: %w", dir, k, a, b, sd, err)
		}
		want := man.Run
		want.Config.FirstLayer, want.Config.LastLayer = a, b
		want.Config.Out, want.Config.Export, want.Config.Plan, want.Config.Stream, want.Config.Resume, want.Config.Force = "", "", "", "", false, false
		if man.Plan != "" {
			want.Config.Budget = 0
		}
		if s.fp.ModelDigest != want.ModelDigest {
			return nil, fmt.Errorf("merge %s: shard %d (%s) is of another model: digest %s, the capture's %s", dir, k, path, s.fp.ModelDigest, want.ModelDigest)
		}
		got, _ := json.Marshal(s.fp)
		exp, _ := json.Marshal(want)
		if string(got) != string(exp) {
			return nil, fmt.Errorf("merge %s: shard %d (%s) was trained with other settings or data than the capture (layers [%d, %d)): %s, want %s", dir, k, path, s.fp.Config.FirstLayer, s.fp.Config.LastLayer, got, exp)
		}
		if s.cur != nil || len(s.done) != b-a {
			return nil, fmt.Errorf("merge %s: shard %d (%s) is unfinished: %d of layers [%d, %d) done (rerun cskv train --from %s --shard %d: it resumes)", dir, k, path, len(s.done), a, b, dir, k)
		}
		done = append(done, s.done...)
	}
	fp := man.Run
	res := &Result{Config: fp.Config, Projections: out}
	for _, d := range done {
		res.Layers = append(res.Layers, d.Info)
	}
	p := &checkpoints.Projections{Hidden: fp.Hidden, KVDim: fp.KVDim, Layers: factorsOf(done)}
	p.Meta = Metadata(fp.Config, fp.BaseName, fp.ModelDigest, fp.Arch, fp.KRanks, fp.VRanks)
	if man.Plan != "" {
		plan, err := alloc.ReadPlan(filepath.Join(dir, man.Plan))
		if err != nil {
			return nil, fmt.Errorf("merge %s: %w", dir, err)
		}
		addPlanMeta(p.Meta, plan)
		res.Plan = plan
	}
	if err := checkpoints.WriteProjections(out, p, exportDTypes[fp.Config.DType]); err != nil {
		return nil, fmt.Errorf("merge: export %s: %w", out, err)
	}
	res.PeakRSS, res.Seconds = PeakRSS(), time.Since(start).Seconds()
	return res, nil
}
