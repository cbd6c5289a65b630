package checkpoints

import (
	"fmt"
	"maps"
	"regexp"
	"strconv"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model/safetensors"
)

// Projections is the export: the factors of every layer plus free-form
// metadata (densities, ranks, init, alpha, quantisation, window, base model
// file and digest, cskv version, training settings: filled by the caller).
type Projections struct {
	Hidden int          // model dim D
	KVDim  int          // Hkv·Dh
	Layers []kv.Factors // per layer; ranks may differ between layers
	Meta   map[string]string
}

// Metadata keys the projections file reserves.
const (
	metaFormat        = "format"
	metaFormatVersion = "format_version"
)

// projName returns the tensor name of kind k (an index into kv.ExportNames) for a
// layer, e.g. "model.layers.3.self_attn.k_proj_a.weight".
func projName(layer, k int) string {
	return fmt.Sprintf("model.layers.%d.self_attn.%s.weight", layer, kv.ExportNames[k])
}

var projPattern = regexp.MustCompile(`^model\.layers\.(0|[1-9][0-9]*)\.self_attn\.([kv]_proj_[ab])\.weight$`)

// WriteProjections writes p as a safetensors file of dtype dt (F32, F16 or
// BF16) at path, atomically. Per layer i it holds
// model.layers.{i}.self_attn.{k,v}_proj_a.weight (rank, hidden) and
// {k,v}_proj_b.weight (kv_dim, rank); __metadata__ is p.Meta plus
// format=cskv-projections and format_version=1. Meta may carry those two keys
// only with exactly those values.
func WriteProjections(path string, p *Projections, dt safetensors.DType) error {
	if err := writeProjections(path, p, dt); err != nil {
		return fmt.Errorf("projections %s: %w", path, err)
	}
	return nil
}

func writeProjections(path string, p *Projections, dt safetensors.DType) error {
	if p == nil {
		return fmt.Errorf("nil projections")
	}
	if p.Hidden <= 0 || p.KVDim <= 0 {
		return fmt.Errorf("hidden %d and kv_dim %d must be positive", p.Hidden, p.KVDim)
	}
	if len(p.Layers) == 0 {
		return fmt.Errorf("no layers")
	}
	md := maps.Clone(p.Meta)
	if md == nil {
		md = map[string]string{}
	}
	for k, want := range map[string]string{metaFormat: ProjectionsFormat, metaFormatVersion: strconv.Itoa(ProjectionsVersion)} {
		if v, ok := md[k]; ok && v != want {
			return fmt.Errorf("metadata %q is %q; it is reserved for %q", k, v, want)
		}
		md[k] = want
	}
	var ts []safetensors.Tensor
	for i, l := range p.Layers {
		if l.KRank <= 0 || l.VRank <= 0 {
			return fmt.Errorf("layer %d: ranks k %d, v %d must be positive", i, l.KRank, l.VRank)
		}
		shapes := l.Shapes(p.Hidden, p.KVDim)
		for k, data := range l.Tensors() {
			name, shape := projName(i, k), shapes[k][:]
			if len(data) != shape[0]*shape[1] {
				return fmt.Errorf("tensor %q: shape %v needs %d values, have %d",
					name, shape, shape[0]*shape[1], len(data))
			}
			if j := nonFinite(data); j >= 0 {
				return fmt.Errorf("tensor %q: element %d is %v: %w", name, j, data[j], ErrNonFinite)
			}
			ts = append(ts, safetensors.Tensor{Name: name, Shape: shape, DType: dt, Data: data})
		}
	}
	return safetensors.Write(path, ts, md)
}

// ReadProjections reads a projections file and checks it: format metadata
// (ErrIncompatible for another version), tensor names, layer indices
// contiguous from 0 with all four tensors each, 2-D shapes consistent between
// A and B and across layers, and finite values (ErrNonFinite). Values of any
// stored dtype come back as float32. The returned Meta omits the format keys.
func ReadProjections(path string) (*Projections, error) {
	p, err := readProjections(path, true)
	if err != nil {
		return nil, fmt.Errorf("projections %s: %w", path, err)
	}
	return p, nil
}

// ReadForeignProjections reads a safetensors file in the projections tensor
// layout written by another tool: the same checks as ReadProjections except
// that it needs no cskv format metadata (Meta is whatever the file has;
// torch's safetensors writer, for one, records format "pt").
func ReadForeignProjections(path string) (*Projections, error) {
	p, err := readProjections(path, false)
	if err != nil {
		return nil, fmt.Errorf("factors file %s: %w", path, err)
	}
	return p, nil
}

// IsProjections says whether metadata is that of a cskv projections file.
func IsProjections(meta map[string]string) bool { return meta[metaFormat] == ProjectionsFormat }

func readProjections(path string, requireFormat bool) (*Projections, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	md := f.Metadata()
	if md == nil {
		md = map[string]string{}
	}
	if requireFormat || md[metaFormat] == ProjectionsFormat { // a foreign file has no cskv version to check
		if md[metaFormat] != ProjectionsFormat {
			return nil, fmt.Errorf("not a cskv projections file: metadata format is %q, want %q", md[metaFormat], ProjectionsFormat)
		}
		if v := md[metaFormatVersion]; v != strconv.Itoa(ProjectionsVersion) {
			return nil, fmt.Errorf("format_version %q, this build reads %d: %w", v, ProjectionsVersion, ErrIncompatible)
		}
	}
	delete(md, metaFormat)
	delete(md, metaFormatVersion)

	// Group tensor names by layer and kind.
	kindIndex := map[string]int{}
	for k, n := range kv.ExportNames {
		kindIndex[n] = k
	}
	layers := map[int]*[4]bool{}
	for _, name := range f.Names() {
		m := projPattern.FindStringSubmatch(name)
		if m == nil {
			return nil, fmt.Errorf("unexpected tensor %q", name)
		}
		i, err := strconv.Atoi(m[1])
		if err != nil {
			return nil, fmt.Errorf("tensor %q: layer index: %v", name, err)
		}
		if layers[i] == nil {
			layers[i] = &[4]bool{}
		}
		layers[i][kindIndex[m[2]]] = true
	}
	if len(layers) == 0 {
		return nil, fmt.Errorf("no layers")
	}
	for i := range len(layers) {
		has, ok := layers[i]
		if !ok {
			return nil, fmt.Errorf("layer indices are not contiguous from 0: layer %d missing among %d layers", i, len(layers))
		}
		for k, present := range has {
			if !present {
				return nil, fmt.Errorf("layer %d: tensor %q missing", i, projName(i, k))
			}
		}
	}

	p := &Projections{Layers: make([]kv.Factors, len(layers)), Meta: md}
	var ref0 [4][]int // layer 0 shapes, the reference for the others
	for i := range p.Layers {
		var data [4][]float32
		var shape [4][]int
		for k := range kv.ExportNames {
			name := projName(i, k)
			d, s, err := f.ReadFloat32(name)
			if err != nil {
				return nil, err
			}
			if len(s) != 2 {
				return nil, fmt.Errorf("layer %d: tensor %q has shape %v, want 2-D", i, name, s)
			}
			if j := nonFinite(d); j >= 0 {
				return nil, fmt.Errorf("tensor %q: element %d is %v: %w", name, j, d[j], ErrNonFinite)
			}
			data[k], shape[k] = d, s
		}
		ka, kb, va, vb := shape[0], shape[1], shape[2], shape[3]
		switch {
		case ka[0] != kb[1]:
			return nil, fmt.Errorf("layer %d: k rank differs: k_proj_a %v vs k_proj_b %v", i, ka, kb)
		case va[0] != vb[1]:
			return nil, fmt.Errorf("layer %d: v rank differs: v_proj_a %v vs v_proj_b %v", i, va, vb)
		case ka[1] != va[1]:
			return nil, fmt.Errorf("layer %d: hidden differs: k_proj_a %v vs v_proj_a %v", i, ka, va)
		case kb[0] != vb[0]:
			return nil, fmt.Errorf("layer %d: kv_dim differs: k_proj_b %v vs v_proj_b %v", i, kb, vb)
		case ka[0] == 0 || va[0] == 0 || ka[1] == 0 || kb[0] == 0:
			return nil, fmt.Errorf("layer %d: empty factor: k_proj_a %v, k_proj_b %v, v_proj_a %v, v_proj_b %v", i, ka, kb, va, vb)
		}
		if i == 0 {
			ref0 = shape
			p.Hidden, p.KVDim = ka[1], kb[0]
		} else if ka[1] != p.Hidden {
			return nil, fmt.Errorf("layer %d: hidden differs from layer 0: k_proj_a %v vs %v", i, ka, ref0[0])
		} else if kb[0] != p.KVDim {
			return nil, fmt.Errorf("layer %d: kv_dim differs from layer 0: k_proj_b %v vs %v", i, kb, ref0[1])
		}
		p.Layers[i] = kv.Factors{KRank: ka[0], VRank: va[0]}
		p.Layers[i].SetTensors(data)
	}
	return p, nil
}
