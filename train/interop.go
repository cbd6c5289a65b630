package train

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/checkpoints/cskvref"
	"github.com/cskv/cskv/model"
)

// Row layouts a foreign factors file may use for the rows of Bk (the key
// channels within each head); the value flag --rope-layout takes.
const (
	RopeHF   = "hf"   // Hugging Face rotate-half: pairs (i, i+Dh/2), cskv's own
	RopeMeta = "meta" // Meta original: adjacent pairs (2i, 2i+1)
)

// Import reads factors written by another tool and checks them against the
// model: a CSKV reference checkpoint pair (src is either .ckpt file of a
// pair named as the reference code names it, or "K.ckpt,V.ckpt"), or a
// safetensors file in the projections tensor layout. layout says how Bk's
// rows are ordered (RopeHF or RopeMeta); it is required for a safetensors
// file without cskv metadata, may only repeat a cskv file's recorded
// layout, and must be hf (or empty) for the reference code's files, which
// are Hugging Face checkpoints. Meta-layout rows are permuted to cskv's
// rotate-half layout. The result's Meta records the base model, the layout,
// the ranks and where the factors came from, ready for WriteProjections.
func Import(m *model.Model, src, layout string) (*checkpoints.Projections, error) {
	if layout != "" && layout != RopeHF && layout != RopeMeta {
		return nil, fmt.Errorf("--rope-layout %q: want %s or %s", layout, RopeHF, RopeMeta)
	}
	p, sourceFormat, err := readForeign(src, layout)
	if err != nil {
		return nil, err
	}
	mc := m.Config
	if d := p.Meta["base_digest"]; d != "" && d != m.Digest {
		return nil, fmt.Errorf("%s was made for base model %q (digest %.12s…), not %s (digest %.12s…)", src, p.Meta["base_model"], d, filepath.Base(m.Path), m.Digest)
	}
	switch {
	case len(p.Layers) != mc.Layers:
		return nil, fmt.Errorf("%s: %d layers of factors, the model %s has %d", src, len(p.Layers), filepath.Base(m.Path), mc.Layers)
	case p.Hidden != mc.Hidden:
		return nil, fmt.Errorf("%s: factors for hidden size %d, the model %s has %d", src, p.Hidden, filepath.Base(m.Path), mc.Hidden)
	case p.KVDim != mc.KVDim():
		return nil, fmt.Errorf("%s: factors for kv_dim %d, the model %s has %d (%d kv heads × head_dim %d)", src, p.KVDim, filepath.Base(m.Path), mc.KVDim(), mc.KVHeads, mc.HeadDim)
	}
	for i, l := range p.Layers {
		if l.KRank > mc.KVDim() || l.VRank > mc.KVDim() {
			return nil, fmt.Errorf("%s layer %d: ranks k %d, v %d exceed kv_dim %d", src, i, l.KRank, l.VRank, mc.KVDim())
		}
	}
	if layout == RopeMeta {
		for i := range p.Layers {
			l := &p.Layers[i]
			l.Bk = model.RopeToHalves(l.Bk, mc.KVHeads, mc.HeadDim, l.KRank)
		}
	}
	meta := maps.Clone(p.Meta)
	if meta == nil {
		meta = map[string]string{}
	}
	if layout == "" {
		layout = RopeHF
	}
	for k, v := range map[string]string{
		"cskv_version":       Version,
		"base_model":         filepath.Base(m.Path),
		"base_digest":        m.Digest,
		"base_arch":          mc.Arch,
		"rope_layout":        "hf-rotate-half",
		"source":             src,
		"source_format":      sourceFormat,
		"source_rope_layout": layout,
		"head_dim":           strconv.Itoa(mc.HeadDim),
		"kv_heads":           strconv.Itoa(mc.KVHeads),
	} {
		meta[k] = v
	}
	kRanks, vRanks := rankLists(p)
	meta["k_rank"], meta["v_rank"] = kRanks, vRanks
	p.Meta = meta
	return p, nil
}

// readForeign reads src by its kind and returns the factors in the file's
// own row layout with the name of its format.
func readForeign(src, layout string) (*checkpoints.Projections, string, error) {
	if strings.HasSuffix(src, ".ckpt") || strings.Contains(src, ",") {
		if layout == RopeMeta {
			return nil, "", fmt.Errorf("--rope-layout meta: the CSKV reference code's checkpoints are Hugging Face (rotate-half) factors")
		}
		kPath, vPath, ok := strings.Cut(src, ",")
		if !ok {
			var err error
			if kPath, vPath, err = cskvref.Pair(src); err != nil {
				return nil, "", err
			}
		}
		p, err := cskvref.Read(kPath, vPath)
		return p, cskvref.Format, err
	}
	p, err := checkpoints.ReadForeignProjections(src)
	if err != nil {
		return nil, "", err
	}
	if rec := p.Meta["rope_layout"]; rec != "" { // cskv records its layout
		if rec != "hf-rotate-half" {
			return nil, "", fmt.Errorf("%s records rope_layout %q; this build knows hf-rotate-half", src, rec)
		}
		if layout == RopeMeta {
			return nil, "", fmt.Errorf("--rope-layout meta: %s records rope_layout %q", src, rec)
		}
		return p, checkpoints.ProjectionsFormat, nil
	}
	if layout == "" {
		return nil, "", fmt.Errorf("%s has no cskv metadata, so its key-row layout is unknown: give --rope-layout %s (Hugging Face rotate-half) or %s (Meta adjacent pairs)", src, RopeHF, RopeMeta)
	}
	return p, "safetensors", nil
}

// rankLists are the k_rank and v_rank metadata values: one number when all
// layers share it, else the per-layer list.
func rankLists(p *checkpoints.Projections) (k, v string) {
	ks, vs := p.Ranks()
	return rankMeta(ks), rankMeta(vs)
}

// ReferenceName is the reference code's file name for projections p: its
// densities, bits, ASVD init and quantisation window, from the metadata.
// headDim and kvHeads are the model's (from its config, or 0 to take the
// head_dim and kv_heads metadata). It refuses factors the reference code
// cannot load: explicit or per-layer ranks, or ranks that its rule
// int(density·head_dim)·kv_heads does not give for the recorded densities.
func ReferenceName(p *checkpoints.Projections, headDim, kvHeads int) (cskvref.Name, error) {
	meta := p.Meta
	if headDim == 0 || kvHeads == 0 {
		var err1, err2 error
		headDim, err1 = strconv.Atoi(meta["head_dim"])
		kvHeads, err2 = strconv.Atoi(meta["kv_heads"])
		if err1 != nil || err2 != nil {
			return cskvref.Name{}, fmt.Errorf("the projections do not record head_dim and kv_heads; give --model so that the ranks can be checked against the reference code's density rule")
		}
	}
	var n cskvref.Name
	for _, side := range []struct {
		name    string
		density *float64
		bits    *int
		rank    func(i int) int
	}{
		{"k", &n.KDensity, &n.KBits, func(i int) int { return p.Layers[i].KRank }},
		{"v", &n.VDensity, &n.VBits, func(i int) int { return p.Layers[i].VRank }},
	} {
		raw := meta[side.name+"_density"]
		d, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return cskvref.Name{}, fmt.Errorf("%s ranks are not expressible as the reference code's densities: %s_density is %q (explicit ranks; the reference code takes only --%s_density)", side.name, side.name, raw, side.name)
		}
		want, err := RankFromDensity(d, headDim, kvHeads)
		if err != nil {
			return cskvref.Name{}, fmt.Errorf("%s_density: %w", side.name, err)
		}
		for i := range p.Layers {
			if r := side.rank(i); r != want {
				return cskvref.Name{}, fmt.Errorf("layer %d %s rank %d is not expressible as the reference code's density: %s_density %v gives int(%v·%d)·%d = %d for every layer (per-layer or explicit ranks cannot be loaded by it)",
					i, side.name, r, side.name, d, d, headDim, kvHeads, want)
			}
		}
		*side.density = d
		*side.bits = 16
		if b := meta[side.name+"_bits"]; b != "" {
			if *side.bits, err = strconv.Atoi(b); err != nil {
				return cskvref.Name{}, fmt.Errorf("%s_bits metadata %q: %v", side.name, b, err)
			}
		}
	}
	n.ASVD = meta["init"] == "asvd"
	if w, err := strconv.Atoi(meta["window"]); err == nil && w > 0 {
		n.UseWindow, n.Window = true, w
	}
	return n, nil
}

// ExportReference writes p as the reference code's pair of .ckpt files in
// dir, named by ReferenceName, and returns their paths.
func ExportReference(p *checkpoints.Projections, headDim, kvHeads int, dir string) (kPath, vPath string, err error) {
	n, err := ReferenceName(p, headDim, kvHeads)
	if err != nil {
		return "", "", fmt.Errorf("export --format %s: %w", cskvref.Format, err)
	}
	return cskvref.Write(dir, n, p)
}

// ExportReferenceFrom writes the reference code's .ckpt pair into dir from
// the projections file projPath, or, when projPath is "", from the run
// checkpoint ckpt (a checkpoint or run directory, as ExportCheckpoint takes).
// The base model modelPath ("" = the one a run directory records, if any)
// supplies head_dim and kv_heads for the pair's name, and must be the
// projections' base model.
func ExportReferenceFrom(ckpt, projPath, modelPath, dir string) (kPath, vPath string, err error) {
	if projPath == "" {
		tmp, err := os.MkdirTemp("", "cskv-export-*")
		if err != nil {
			return "", "", err
		}
		defer os.RemoveAll(tmp)
		projPath = filepath.Join(tmp, "projections.safetensors")
		if err := ExportCheckpoint(ckpt, projPath, DTypeF32); err != nil {
			return "", "", err
		}
	}
	p, err := checkpoints.ReadProjections(projPath)
	if err != nil {
		return "", "", err
	}
	var headDim, kvHeads int
	openIt := modelPath != ""
	if !openIt && ckpt != "" { // a run directory records its model
		if rec, err := RecordedConfig(ckpt); err == nil {
			modelPath, openIt = rec.Model, true
		}
	}
	if openIt {
		m, err := OpenModel(modelPath)
		if err != nil {
			return "", "", err
		}
		headDim, kvHeads = m.Config.HeadDim, m.Config.KVHeads
		m.Close()
		if d := p.Meta["base_digest"]; d != "" && d != m.Digest {
			return "", "", fmt.Errorf("--model %s is not the base model of %s (%q, digest %.12s…)", modelPath, projPath, p.Meta["base_model"], d)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	return ExportReference(p, headDim, kvHeads, dir)
}

// ProjectionsFor reads a projections file and checks that it was made for
// m: a file made for another base model is refused unless force (then a
// warning is logged). With a row layout, or for a reference .ckpt pair
// ("….ckpt" or "K.ckpt,V.ckpt"), the file is imported instead (Import):
// checked against m's shapes, rows put in cskv's order.
func ProjectionsFor(m *model.Model, path, layout string, force bool, log logrus.FieldLogger) (*checkpoints.Projections, error) {
	if layout != "" || strings.HasSuffix(path, ".ckpt") || strings.Contains(path, ",") {
		return Import(m, path, layout)
	}
	proj, err := checkpoints.ReadProjections(path)
	if err != nil {
		return nil, err
	}
	if d := proj.Meta["base_digest"]; d != "" && d != m.Digest {
		msg := fmt.Sprintf("projections %s were made for base model %q (digest %.12s…), not this model (digest %.12s…)", path, proj.Meta["base_model"], d, m.Digest)
		if !force {
			return nil, fmt.Errorf("%s; use --force to use them anyway", msg)
		}
		log.Warn(msg)
	}
	if len(proj.Layers) == 0 {
		return nil, fmt.Errorf("projections %s hold no layers", path)
	}
	return proj, nil
}
