package train

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cskv/cskv/alloc"
	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model"
)

// Version is the cskv version recorded in exported files.
const Version = "0.1.0"

// export writes the projections file (checkpoints.WriteProjections) with the
// run's settings in its metadata. Factors are already in the Hugging Face
// rotate-half row layout (the model loader normalises Meta-layout files).
func export(cfg Config, m *model.Model, done []doneLayer, kRanks, vRanks []int, plan *alloc.Plan) (string, error) {
	path := cfg.exportPath()
	p := &checkpoints.Projections{Hidden: m.Config.Hidden, KVDim: m.Config.KVDim(), Layers: factorsOf(done)}
	p.Meta = Metadata(cfg, filepath.Base(m.Path), m.Digest, m.Config.Arch, kRanks, vRanks)
	addPlanMeta(p.Meta, plan)
	if err := checkpoints.WriteProjections(path, p, exportDTypes[cfg.DType]); err != nil {
		return "", fmt.Errorf("export %s: %w", path, err)
	}
	return path, nil
}

// addPlanMeta records the fraction of the fp16 cache a plan (nil: none)
// keeps.
func addPlanMeta(meta map[string]string, plan *alloc.Plan) {
	if plan != nil {
		meta["plan_fraction"] = strconv.FormatFloat(plan.Fraction(), 'g', 6, 64)
	}
}

// Metadata is the __metadata__ of an exported projections file: everything
// needed to know how the factors were made and how to evaluate them.
//
// Ranks are per layer: k_rank and v_rank hold the rank when every layer has
// the same, else the comma-separated list in layer order (as Import writes
// them).
func Metadata(cfg Config, baseName, baseDigest, arch string, kRanks, vRanks []int) map[string]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	i := strconv.Itoa
	meta := map[string]string{
		"cskv_version": Version,
		"base_model":   baseName,
		"base_digest":  baseDigest,
		"base_arch":    arch,
		"rope_layout":  "hf-rotate-half",
		"k_density":    density(cfg.KRank, cfg.KDensity),
		"v_density":    density(cfg.VRank, cfg.VDensity),
		"k_rank":       rankMeta(kRanks),
		"v_rank":       rankMeta(vRanks),
		"init":         cfg.Init.String(),
		"alpha":        f(cfg.Alpha),
		"k_bits":       i(cfg.KBits),
		"v_bits":       i(cfg.VBits),
		"k_quant":      cfg.KQuant.String(),
		"quant_window": i(cfg.QuantWindow),
		"quant_zero":   cfg.QuantZero.String(),
		"window_mode":  cfg.Window.String(),
		"out_window":   i(cfg.OutWindow),
		"window":       i(cfg.OutWindow), // the bi-branch window the factors were trained for (0 = all compressed)
		"seq_len":      i(cfg.SeqLen),
		"calib_chunks": i(cfg.CalibChunks),
		"steps":        i(cfg.Steps),
		"lr":           f(cfg.LR),
		"schedule":     cfg.Schedule.String(),
		"batch":        i(cfg.Batch),
		"seed":         strconv.FormatUint(cfg.Seed, 10),
		"lambda_kv":    f(cfg.LambdaKV),
		"lambda_out":   f(cfg.LambdaOut),
		"out_seqs":     i(cfg.OutSeqs),
	}
	if cfg.Budget > 0 {
		meta["budget"] = f(cfg.Budget)
		meta["objective"] = cfg.Objective.String()
		meta["max_points"] = i(cfg.MaxPoints)
	}
	if cfg.OutWindowAlt > 0 { // absent without it, so that the reference's files stay as they were
		meta["out_window_alt"] = i(cfg.OutWindowAlt)
		meta["out_window_alt_steps"] = i(max(cfg.OutWindowAltSteps, 1))
	}
	if cfg.Plan != "" {
		meta["plan"] = filepath.Base(cfg.Plan)
	}
	return meta
}

// rankMeta is the rank shared by every layer, or the comma-separated list.
func rankMeta(r []int) string {
	s := make([]string, len(r))
	uniform := true
	for i, x := range r {
		s[i] = strconv.Itoa(x)
		uniform = uniform && x == r[0]
	}
	if uniform && len(r) > 0 {
		return s[0]
	}
	return strings.Join(s, ",")
}

// density is the metadata value of a side's density: "explicit-rank" when
// an explicit rank overrode it.
func density(rank int, d float64) string {
	if rank > 0 {
		return "explicit-rank"
	}
	return strconv.FormatFloat(d, 'g', -1, 64)
}

// ExportCheckpoint writes the projections file from a checkpoint in which
// every layer is finished (the one written at the end of the last layer);
// given a run directory it takes the run's latest checkpoint.
func ExportCheckpoint(ckpt, out string, dtype DType) error {
	if err := dtype.Check(); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(ckpt, runFile)); err == nil {
		latest, err := checkpoints.Latest(ckpt)
		if err != nil {
			return fmt.Errorf("--checkpoint %s: %w", ckpt, err)
		}
		ckpt = latest
	}
	st, err := checkpoints.Load(ckpt)
	if err != nil {
		return err
	}
	if st.Layer < st.NumLayers {
		return fmt.Errorf("checkpoint %s is at layer %d step %d: only %d of %d layers are finished; export needs all (use the run's last checkpoint)", ckpt, st.Layer, st.Step, st.Layer, st.NumLayers)
	}
	s, err := decodeSnapshot(st, ckpt)
	if err != nil {
		return err
	}
	fp := s.fp
	p := &checkpoints.Projections{Hidden: fp.Hidden, KVDim: fp.KVDim, Layers: factorsOf(s.done)}
	p.Meta = Metadata(fp.Config, fp.BaseName, fp.ModelDigest, fp.Arch, fp.KRanks, fp.VRanks)
	if err := checkpoints.WriteProjections(out, p, exportDTypes[dtype]); err != nil {
		return fmt.Errorf("export %s: %w", out, err)
	}
	return nil
}

// factorsOf lists the finished layers' factors.
func factorsOf(done []doneLayer) []kv.Factors {
	f := make([]kv.Factors, len(done))
	for i, d := range done {
		f[i] = d.Factors
	}
	return f
}
