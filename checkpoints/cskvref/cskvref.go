// Package cskvref reads and writes the factor files of the CSKV reference
// code (PyTorch): one file for the keys and one for the values, each a
// torch.save archive of a per-layer list of ({'weight': A}, {'weight': B})
// with A (rank, hidden) and B (kv_dim, rank) in nn.Linear's [out, in]
// layout, rows of B in the Hugging Face rotate-half order. File names encode
// the densities and bit widths the reference loader looks for (Name).
//
// The writer produces files that torch.load(..., weights_only=True) accepts:
// pickle protocol 2 using only _rebuild_tensor_v2, the FloatStorage type and
// OrderedDict as globals; a zip archive with every record stored, aligned to
// 64 bytes, under one folder, with the version and byteorder records. The
// reader parses pickles with github.com/nlpodyssey/gopickle and resolves only
// the globals a weights-only load allows, so a file that would run code is
// refused rather than interpreted.
package cskvref

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/pytorch"
	"github.com/nlpodyssey/gopickle/types"

	"github.com/cskv/cskv/atomicfile"
	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/kv"
)

// Format is the value of the "source_format" metadata an import records.
const Format = "cskv-ref"

// Side says which projection a file holds.
type Side byte

const (
	K Side = 'k'
	V Side = 'v'
)

// Name is what the reference code's checkpoint file names encode:
// density_k_{KDensity}_v_{VDensity}_quant_k_{KBits}_v_{VBits}_[asvd_][window_{W}_]_{k|v}.ckpt,
// densities printed as Python prints a float.
type Name struct {
	KDensity, VDensity float64
	KBits, VBits       int // 16: not quantised
	ASVD               bool
	UseWindow          bool
	Window             int // quantisation window; the name shows 0 when both sides are 16-bit
}

// Stem is the part of the file name before "_k.ckpt" / "_v.ckpt".
func (n Name) Stem() string {
	s := fmt.Sprintf("density_k_%s_v_%s_quant_k_%d_v_%d_", pyFloat(n.KDensity), pyFloat(n.VDensity), n.KBits, n.VBits)
	if n.ASVD {
		s += "asvd_"
	}
	if n.UseWindow {
		w := n.Window
		if n.KBits == 16 && n.VBits == 16 {
			w = 0
		}
		s += fmt.Sprintf("window_%d_", w)
	}
	return s
}

// File is the file name of one side.
func (n Name) File(s Side) string { return n.Stem() + "_" + string(s) + ".ckpt" }

// pyFloat formats v as Python's str(float) does: shortest round-trip digits
// with a decimal point or an exponent (0.25, 1.0, 1e-05).
func pyFloat(v float64) string {
	s := strconv.FormatFloat(v, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eIN") {
		s += ".0"
	}
	return s
}

var namePattern = regexp.MustCompile(`^density_k_([0-9.e+-]+)_v_([0-9.e+-]+)_quant_k_([0-9]+)_v_([0-9]+)_(asvd_)?(?:window_([0-9]+)_)?_([kv])\.ckpt$`)

// ParseName reads the settings and side out of a reference file name (the
// base name of path). ok is false when the name does not follow the pattern.
func ParseName(path string) (n Name, s Side, ok bool) {
	m := namePattern.FindStringSubmatch(filepath.Base(path))
	if m == nil {
		return Name{}, 0, false
	}
	var err [4]error
	n.KDensity, err[0] = strconv.ParseFloat(m[1], 64)
	n.VDensity, err[1] = strconv.ParseFloat(m[2], 64)
	n.KBits, err[2] = strconv.Atoi(m[3])
	n.VBits, err[3] = strconv.Atoi(m[4])
	if errors.Join(err[:]...) != nil {
		return Name{}, 0, false
	}
	n.ASVD = m[5] != ""
	if m[6] != "" {
		n.UseWindow = true
		n.Window, _ = strconv.Atoi(m[6])
	}
	return n, Side(m[7][0]), true
}

// Pair returns the K and V paths of the pair that path (either file, named
// as the reference code names them) belongs to.
func Pair(path string) (kPath, vPath string, err error) {
	_, s, ok := ParseName(path)
	if !ok {
		return "", "", fmt.Errorf("%s: not named like a CSKV reference checkpoint (density_k_…_quant_k_…__k.ckpt); give both files", path)
	}
	stem := strings.TrimSuffix(path, "_"+string(s)+".ckpt")
	return stem + "_k.ckpt", stem + "_v.ckpt", nil
}

// Write writes p as the pair dir/name.File(K) and dir/name.File(V), each
// atomically, in float32. It returns the two paths.
func Write(dir string, name Name, p *checkpoints.Projections) (kPath, vPath string, err error) {
	if err := check(p); err != nil {
		return "", "", err
	}
	kPath, vPath = filepath.Join(dir, name.File(K)), filepath.Join(dir, name.File(V))
	for _, f := range []struct {
		path string
		side Side
	}{{kPath, K}, {vPath, V}} {
		archive := strings.TrimSuffix(filepath.Base(f.path), ".ckpt")
		if err := atomicfile.WriteFunc(f.path, func(w io.Writer) error { return WriteSide(w, archive, p, f.side) }); err != nil {
			return "", "", err
		}
	}
	return kPath, vPath, nil
}

// WriteSide writes one side of p as a torch.save archive whose records lie
// under the folder archive (torch uses the file name without extension).
func WriteSide(w io.Writer, archive string, p *checkpoints.Projections, s Side) error {
	if err := check(p); err != nil {
		return err
	}
	if archive == "" || strings.ContainsAny(archive, `/\`) {
		return fmt.Errorf("archive folder name %q: must be non-empty without slashes", archive)
	}
	if s != K && s != V {
		return fmt.Errorf("side %q: want k or v", s)
	}
	var pk pickler
	pk.proto()
	pk.op(opEmptyList)
	pk.op(opMark)
	var storages []record
	for _, l := range p.Layers {
		a, b, r := l.Ak, l.Bk, l.KRank
		if s == V {
			a, b, r = l.Av, l.Bv, l.VRank
		}
		for _, t := range []struct {
			data       []float32
			rows, cols int
		}{{a, r, p.Hidden}, {b, p.KVDim, r}} {
			key := strconv.Itoa(len(storages))
			pk.op(opEmptyDict)
			pk.str("weight")
			pk.tensor("FloatStorage", key, t.rows, t.cols)
			pk.op(opSetItem)
			storages = append(storages, float32Record("data/"+key, t.data))
		}
		pk.op(opTuple2)
	}
	pk.op(opAppends)
	pk.op(opStop)
	records := []record{
		bytesRecord("data.pkl", pk.b.Bytes()),
		bytesRecord(".format_version", []byte("1")),
		bytesRecord(".storage_alignment", []byte(strconv.Itoa(recordAlignment))),
		bytesRecord("byteorder", []byte("little")),
	}
	records = append(records, storages...)
	records = append(records, bytesRecord("version", []byte(archiveVersion)))
	return writeArchive(w, archive, records)
}

// check validates p's shapes and values before anything is written.
func check(p *checkpoints.Projections) error {
	if p == nil || len(p.Layers) == 0 {
		return fmt.Errorf("no layers to write")
	}
	if p.Hidden <= 0 || p.KVDim <= 0 {
		return fmt.Errorf("hidden %d and kv_dim %d must be positive", p.Hidden, p.KVDim)
	}
	for i, l := range p.Layers {
		if err := l.Check(p.Hidden, p.KVDim); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		for k, t := range l.Tensors() {
			for j, x := range t {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					return fmt.Errorf("layer %d %s: element %d is %v: %w", i, kv.ExportNames[k], j, x, checkpoints.ErrNonFinite)
				}
			}
		}
	}
	return nil
}

// Read reads a K file and a V file and checks that they belong together:
// the same number of layers, A (rank, hidden) and B (kv_dim, rank) in every
// layer, one hidden and one kv_dim throughout, finite values. Half and
// bfloat16 storages are widened to float32. Meta holds the ranks, the row
// layout (hf-rotate-half, the reference code's) and, when the K file is
// named as the reference code names it, the densities and bits.
func Read(kPath, vPath string) (*checkpoints.Projections, error) {
	ks, err := readSide(kPath)
	if err != nil {
		return nil, err
	}
	vs, err := readSide(vPath)
	if err != nil {
		return nil, err
	}
	if len(ks) != len(vs) {
		return nil, fmt.Errorf("%s has %d layers, %s has %d", kPath, len(ks), vPath, len(vs))
	}
	p := &checkpoints.Projections{Hidden: ks[0].a.cols, KVDim: ks[0].b.rows, Meta: map[string]string{}}
	for i := range ks {
		k, v := ks[i], vs[i]
		for _, f := range []struct {
			path string
			l    sidePair
		}{{kPath, k}, {vPath, v}} {
			if f.l.a.cols != p.Hidden || f.l.b.rows != p.KVDim {
				return nil, fmt.Errorf("%s layer %d: A %v, B %v; layer 0 of %s has hidden %d, kv_dim %d",
					f.path, i, f.l.a.shape(), f.l.b.shape(), kPath, p.Hidden, p.KVDim)
			}
		}
		p.Layers = append(p.Layers, kv.Factors{Ak: k.a.data, Bk: k.b.data, Av: v.a.data, Bv: v.b.data, KRank: k.a.rows, VRank: v.a.rows})
	}
	p.Meta["source_format"] = Format
	p.Meta["rope_layout"] = "hf-rotate-half"
	kRank, vRank := p.Layers[0].KRank, p.Layers[0].VRank
	for _, l := range p.Layers {
		if l.KRank != kRank || l.VRank != vRank {
			kRank, vRank = 0, 0
		}
	}
	if kRank > 0 { // uniform ranks; per-layer ones are in the tensor shapes
		p.Meta["k_rank"] = strconv.Itoa(kRank)
		p.Meta["v_rank"] = strconv.Itoa(vRank)
	}
	if n, _, ok := ParseName(kPath); ok {
		p.Meta["k_density"] = strconv.FormatFloat(n.KDensity, 'g', -1, 64)
		p.Meta["v_density"] = strconv.FormatFloat(n.VDensity, 'g', -1, 64)
		p.Meta["k_bits"] = strconv.Itoa(n.KBits)
		p.Meta["v_bits"] = strconv.Itoa(n.VBits)
	}
	return p, nil
}

// matrix is a row-major 2-D float32 tensor.
type matrix struct {
	data       []float32
	rows, cols int
}

func (m matrix) shape() []int { return []int{m.rows, m.cols} }

// sidePair is one layer's factors from one file: A (rank, hidden), B (kv_dim, rank).
type sidePair struct{ a, b matrix }

// readSide reads one reference file: the per-layer list of (A, B) pairs,
// each rank consistent between A and B.
func readSide(path string) ([]sidePair, error) {
	fs, err := readPairs(path)
	if err != nil {
		return nil, fmt.Errorf("CSKV reference checkpoint %s: %w", path, err)
	}
	return fs, nil
}

func readPairs(path string) (fs []sidePair, err error) {
	obj, err := loadTorch(path)
	if err != nil {
		return nil, err
	}
	list, ok := obj.(*types.List)
	if !ok {
		return nil, fmt.Errorf("top-level object is %s, want a list with one (A, B) pair per layer", typeName(obj))
	}
	if len(*list) == 0 {
		return nil, fmt.Errorf("the list of layers is empty")
	}
	for i, item := range *list {
		var pair []interface{}
		switch t := item.(type) {
		case *types.Tuple:
			for j := range t.Len() {
				pair = append(pair, t.Get(j))
			}
		case *types.List:
			pair = *t
		default:
			return nil, fmt.Errorf("layer %d is %s, want an (A, B) pair", i, typeName(item))
		}
		if len(pair) != 2 {
			return nil, fmt.Errorf("layer %d holds %d items, want 2 (A and B)", i, len(pair))
		}
		var f sidePair
		for j, dst := range []*matrix{&f.a, &f.b} {
			m, err := weight(pair[j])
			if err != nil {
				return nil, fmt.Errorf("layer %d %s: %w", i, "AB"[j:j+1], err)
			}
			*dst = m
		}
		if f.a.rows != f.b.cols {
			return nil, fmt.Errorf("layer %d: rank differs between A %v and B %v", i, f.a.shape(), f.b.shape())
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// weight returns the "weight" entry of a state dict (dict or OrderedDict
// holding that key alone) as a matrix.
func weight(obj interface{}) (matrix, error) {
	var entries []types.DictEntry
	switch d := obj.(type) {
	case *types.Dict:
		entries = *d
	case *types.OrderedDict:
		for e := d.List.Front(); e != nil; e = e.Next() {
			oe := e.Value.(*types.OrderedDictEntry)
			entries = append(entries, types.DictEntry{Key: oe.Key, Value: oe.Value})
		}
	default:
		return matrix{}, fmt.Errorf("is %s, want a state dict {'weight': tensor}", typeName(obj))
	}
	var w interface{}
	for _, e := range entries {
		if e.Key != "weight" {
			return matrix{}, fmt.Errorf("state dict has key %v; only 'weight' is supported (no bias)", e.Key)
		}
		w = e.Value
	}
	t, ok := w.(*pytorch.Tensor)
	if !ok {
		return matrix{}, fmt.Errorf("'weight' is %s, want a tensor", typeName(w))
	}
	return toMatrix(t)
}

// matrix copies a 2-D tensor (any strides within its storage) into a
// row-major float32 matrix.
func toMatrix(t *pytorch.Tensor) (matrix, error) {
	if len(t.Size) != 2 || len(t.Stride) != 2 {
		return matrix{}, fmt.Errorf("tensor of shape %v, want 2-D", t.Size)
	}
	rows, cols := t.Size[0], t.Size[1]
	if rows <= 0 || cols <= 0 {
		return matrix{}, fmt.Errorf("empty tensor of shape %v", t.Size)
	}
	var src []float32
	switch s := t.Source.(type) {
	case *pytorch.FloatStorage:
		src = s.Data
	case *pytorch.HalfStorage:
		src = s.Data
	case *pytorch.BFloat16Storage:
		src = s.Data
	default:
		return matrix{}, fmt.Errorf("storage %s: want float32, float16 or bfloat16", typeName(t.Source))
	}
	s0, s1, off := t.Stride[0], t.Stride[1], t.StorageOffset
	if s0 < 0 || s1 < 0 || off < 0 {
		return matrix{}, fmt.Errorf("negative stride %v or offset %d", t.Stride, off)
	}
	if last := off + (rows-1)*s0 + (cols-1)*s1; last >= len(src) {
		return matrix{}, fmt.Errorf("tensor of shape %v, strides %v, offset %d reaches element %d of a %d-element storage", t.Size, t.Stride, off, last, len(src))
	}
	m := matrix{data: make([]float32, rows*cols), rows: rows, cols: cols}
	for i := range rows {
		for j := range cols {
			x := src[off+i*s0+j*s1]
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return matrix{}, fmt.Errorf("element (%d, %d) is %v: %w", i, j, x, checkpoints.ErrNonFinite)
			}
			m.data[i*cols+j] = x
		}
	}
	return m, nil
}

// storageTypes are the storages a file may use, with their element sizes.
var storageTypes = map[string]struct {
	class pytorch.StorageClassInterface
	size  int
}{
	"FloatStorage":    {&pytorch.FloatStorageClass{}, 4},
	"HalfStorage":     {&pytorch.HalfStorageClass{}, 2},
	"BFloat16Storage": {&pytorch.BFloat16StorageClass{}, 2},
}

// loadTorch unpickles the data.pkl of a torch.save zip archive, resolving
// only the globals a weights-only load of tensors needs and reading each
// storage after checking its record's size.
func loadTorch(path string) (obj interface{}, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil || string(magic[:]) != "PK\x03\x04" {
		return nil, fmt.Errorf("not a PyTorch zip archive (torch.save since 1.6); the legacy format is not supported")
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("zip archive: %w", err)
	}
	records := map[string]*zip.File{}
	var folder string
	for _, zf := range zr.File {
		dir, rest, ok := strings.Cut(zf.Name, "/")
		if !ok || (folder != "" && dir != folder) {
			return nil, fmt.Errorf("record %q is not under the archive's one folder", zf.Name)
		}
		folder = dir
		records[rest] = zf
	}
	for _, need := range []string{"data.pkl", "version"} {
		if records[need] == nil {
			return nil, fmt.Errorf("record %s/%s missing", folder, need)
		}
	}
	if bo := records["byteorder"]; bo != nil {
		b, err := readRecord(bo, 16)
		if err != nil {
			return nil, err
		}
		if string(b) != "little" {
			return nil, fmt.Errorf("byteorder %q: only little-endian files are supported", b)
		}
	}
	pkl, err := readRecord(records["data.pkl"], 64<<20)
	if err != nil {
		return nil, err
	}

	defer func() { // the unpickler is not ours: a malformed file must not crash the caller
		if r := recover(); r != nil {
			obj, err = nil, fmt.Errorf("malformed pickle: %v", r)
		}
	}()
	u := pickle.NewUnpickler(bytes.NewReader(pkl))
	u.FindClass = func(module, name string) (interface{}, error) {
		switch full := module + "." + name; full {
		case "torch._utils._rebuild_tensor_v2":
			return &pytorch.RebuildTensorV2{}, nil
		case "collections.OrderedDict":
			return &types.OrderedDictClass{}, nil
		default:
			if st, ok := storageTypes[name]; ok && module == "torch" {
				return st.class, nil
			}
			return nil, fmt.Errorf("global %s is not allowed (only tensors, their float storages and OrderedDict)", full)
		}
	}
	loaded := map[string]pytorch.StorageInterface{}
	u.PersistentLoad = func(id interface{}) (interface{}, error) {
		t, ok := id.(*types.Tuple)
		if !ok || t.Len() != 5 || t.Get(0) != "storage" {
			return nil, fmt.Errorf("persistent id %v: want ('storage', type, key, location, numel)", id)
		}
		class, okC := t.Get(1).(pytorch.StorageClassInterface)
		key, okK := t.Get(2).(string)
		loc, okL := t.Get(3).(string)
		numel, okN := t.Get(4).(int)
		if !okC || !okK || !okL || !okN || numel < 0 {
			return nil, fmt.Errorf("persistent id %v: unexpected field types", id)
		}
		if s, ok := loaded[key]; ok {
			return s, nil
		}
		rec := records["data/"+key]
		if rec == nil {
			return nil, fmt.Errorf("storage record %s/data/%s missing", folder, key)
		}
		var elem int
		for _, st := range storageTypes {
			if st.class == class {
				elem = st.size
			}
		}
		if want := uint64(numel) * uint64(elem); rec.UncompressedSize64 != want {
			return nil, fmt.Errorf("storage record %s holds %d bytes; %d elements need %d", rec.Name, rec.UncompressedSize64, numel, want)
		}
		rc, err := rec.Open()
		if err != nil {
			return nil, fmt.Errorf("storage record %s: %w", rec.Name, err)
		}
		defer rc.Close()
		s := class.New(numel, loc)
		if err := s.SetFromFileWithSize(rc, numel); err != nil {
			return nil, fmt.Errorf("storage record %s: %w", rec.Name, err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil { // reaching EOF checks the CRC
			return nil, fmt.Errorf("storage record %s: %w", rec.Name, err)
		}
		loaded[key] = s
		return s, nil
	}
	return u.Load()
}

// readRecord reads a whole small record, at most limit bytes.
func readRecord(zf *zip.File, limit uint64) ([]byte, error) {
	if zf.UncompressedSize64 > limit {
		return nil, fmt.Errorf("record %s: %d bytes, more than the %d expected", zf.Name, zf.UncompressedSize64, limit)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", zf.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", zf.Name, err)
	}
	return b, nil
}

func typeName(v interface{}) string {
	switch v.(type) {
	case nil:
		return "None"
	case *types.List:
		return "a list"
	case *types.Tuple:
		return "a tuple"
	case *types.Dict, *types.OrderedDict:
		return "a dict"
	case *pytorch.Tensor:
		return "a tensor"
	case string:
		return "a string"
	}
	return fmt.Sprintf("%T", v)
}
