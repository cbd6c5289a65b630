package checkpoints

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/cskv/cskv/model/safetensors"
)

// Tensor is one named float32 array in row-major order.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32 // len = product of Shape (1 for an empty Shape)
}

// State is everything training needs to continue bit-for-bit.
type State struct {
	Format      int             // format version; 0 or FormatVersion on Save, FormatVersion after Load
	Layer       int             // layer in progress, 0-based; == NumLayers when finished
	Step        int             // Adam steps done in Layer
	NumLayers   int             // layers in the model
	RNG         []byte          // opaque RNG state (e.g. math/rand/v2 PCG MarshalBinary)
	Cursor      int64           // data cursor
	Config      json.RawMessage // opaque run config; comes back compacted
	ModelDigest string          // digest of the source model
	Tensors     []Tensor        // finished factors, current factors, Adam moments; names chosen by the caller
	History     json.RawMessage // opaque per-layer logs; comes back compacted
}

// validate checks the fields Save and Load agree on.
func (st *State) validate() error {
	if st.NumLayers <= 0 {
		return fmt.Errorf("num_layers %d must be positive", st.NumLayers)
	}
	if st.Layer < 0 || st.Layer > st.NumLayers {
		return fmt.Errorf("layer %d outside [0, %d]", st.Layer, st.NumLayers)
	}
	if st.Step < 0 {
		return fmt.Errorf("negative step %d", st.Step)
	}
	if st.Cursor < 0 {
		return fmt.Errorf("negative cursor %d", st.Cursor)
	}
	return nil
}

// checkTensors rejects bad names, shapes that do not match the data, and
// non-finite values.
func checkTensors(ts []Tensor) error {
	seen := make(map[string]bool, len(ts))
	for _, t := range ts {
		if t.Name == "" {
			return errors.New("tensor with empty name")
		}
		if seen[t.Name] {
			return fmt.Errorf("duplicate tensor %q", t.Name)
		}
		seen[t.Name] = true
		n := 1
		for _, d := range t.Shape {
			if d < 0 || (d > 0 && n > math.MaxInt/d) {
				return fmt.Errorf("tensor %q: invalid shape %v", t.Name, t.Shape)
			}
			n *= d
		}
		if n != len(t.Data) {
			return fmt.Errorf("tensor %q: shape %v needs %d values, have %d", t.Name, t.Shape, n, len(t.Data))
		}
		if i := nonFinite(t.Data); i >= 0 {
			return fmt.Errorf("tensor %q: element %d is %v: %w", t.Name, i, t.Data[i], ErrNonFinite)
		}
	}
	return nil
}

// nonFinite returns the index of the first NaN or ±Inf in x, or -1.
func nonFinite(x []float32) int {
	for i, v := range x {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return i
		}
	}
	return -1
}

// Save writes st as the checkpoint dir/ckpt-L<Layer>-S<Step> and returns its
// path. dir is created if needed. The checkpoint is assembled in "<name>.tmp",
// every file and the directory fsynced, then renamed into place; an existing
// checkpoint of the same name is moved aside first and removed afterwards.
// Tensors are stored as F32, bit for bit. Save refuses non-finite values
// (ErrNonFinite), since Load would refuse them.
func Save(dir string, st *State) (path string, err error) {
	if st == nil {
		return "", errors.New("checkpoint: nil state")
	}
	if st.Format != 0 && st.Format != FormatVersion {
		return "", fmt.Errorf("checkpoint: state format %d, this build writes %d: %w", st.Format, FormatVersion, ErrIncompatible)
	}
	if err := st.validate(); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if err := checkTensors(st.Tensors); err != nil {
		return "", fmt.Errorf("checkpoint layer %d step %d: %w", st.Layer, st.Step, err)
	}
	for _, raw := range []json.RawMessage{st.Config, st.History} {
		if len(raw) > 0 && !json.Valid(raw) {
			return "", fmt.Errorf("checkpoint layer %d step %d: config or history is not valid JSON", st.Layer, st.Step)
		}
	}

	final := filepath.Join(dir, DirName(st.Layer, st.Step))
	tmp := final + tmpSuffix
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
			err = fmt.Errorf("checkpoint %s: %w", final, err)
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.RemoveAll(tmp); err != nil { // leftover of a crashed Save
		return "", err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return "", err
	}

	ts := make([]safetensors.Tensor, len(st.Tensors))
	names := make([]string, len(st.Tensors))
	for i, t := range st.Tensors {
		ts[i] = safetensors.Tensor{Name: t.Name, Shape: t.Shape, DType: safetensors.F32, Data: t.Data}
		names[i] = t.Name
	}
	tensorsPath := filepath.Join(tmp, TensorsFile)
	md := map[string]string{"format": Magic, "format_version": strconv.Itoa(FormatVersion),
		"layer": strconv.Itoa(st.Layer), "step": strconv.Itoa(st.Step)}
	if err := writeFile(tensorsPath, func(w io.Writer) error { return safetensors.Encode(w, ts, md) }); err != nil {
		return "", err
	}
	sum, err := FileSHA256(tensorsPath)
	if err != nil {
		return "", err
	}
	sj := stateJSON{
		Magic: Magic, Format: FormatVersion,
		Layer: st.Layer, Step: st.Step, NumLayers: st.NumLayers,
		RNG: st.RNG, Cursor: st.Cursor, ModelDigest: st.ModelDigest,
		Tensors: names, TensorsSHA256: sum,
		Config: st.Config, History: st.History,
	}
	// No HTML escaping, so Config and History come back byte for byte when
	// they were compact.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(sj); err != nil {
		return "", err
	}
	if err := writeFile(filepath.Join(tmp, StateFile), func(w io.Writer) error { _, err := w.Write(b.Bytes()); return err }); err != nil {
		return "", err
	}
	if err := syncDir(tmp); err != nil {
		return "", err
	}

	// Replace any checkpoint of the same name: move it aside, rename the new
	// one in, then delete the old one.
	old := final + oldSuffix
	if err := os.RemoveAll(old); err != nil {
		return "", err
	}
	replaced := false
	if _, err := os.Lstat(final); err == nil {
		if err := os.Rename(final, old); err != nil {
			return "", err
		}
		replaced = true
	}
	if err := os.Rename(tmp, final); err != nil {
		if replaced {
			os.Rename(old, final) // best effort: put the previous checkpoint back
		}
		return "", err
	}
	if err := syncDir(dir); err != nil {
		return "", err
	}
	if replaced {
		if err := os.RemoveAll(old); err != nil {
			return "", err
		}
	}
	return final, nil
}

// createFile opens the files Save writes inside its temporary directory; a
// test replaces it to simulate a full disk.
var createFile = func(path string) (io.WriteCloser, error) { return os.Create(path) }

// writeFile creates path through createFile, lets fill write it, and
// fsyncs it when the file supports it.
func writeFile(path string, fill func(w io.Writer) error) error {
	f, err := createFile(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = fill(bw); err == nil {
		err = bw.Flush()
	}
	if s, ok := f.(interface{ Sync() error }); ok && err == nil {
		err = s.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir fsyncs a directory so that renames and creations in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	// Some file systems cannot fsync a directory; skip it there.
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}

// FileSHA256 returns the hex SHA-256 of a file's contents (the digests of
// checkpoints' tensor files and of sharded runs' streams).
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Load reads the checkpoint directory at path and checks it: magic and format
// version (ErrIncompatible for another version), presence and integrity of
// both files (ErrCorrupt), the tensor list against state.json, and finite
// values (ErrNonFinite, naming the tensor). Tensors come back in the order
// they were saved.
func Load(path string) (*State, error) {
	st, err := load(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return st, nil
}

func load(path string) (*State, error) {
	if fi, err := os.Stat(path); err != nil {
		return nil, err
	} else if !fi.IsDir() {
		return nil, errors.New("not a directory")
	}
	b, err := os.ReadFile(filepath.Join(path, StateFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	var probe versionProbe
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, StateFile, err)
	}
	if probe.Magic != Magic {
		return nil, fmt.Errorf("%w: %s: magic %q, want %q", ErrCorrupt, StateFile, probe.Magic, Magic)
	}
	if probe.Format != FormatVersion {
		return nil, fmt.Errorf("%s: format version %d, this build reads %d: %w", StateFile, probe.Format, FormatVersion, ErrIncompatible)
	}
	var sj stateJSON
	if err := json.Unmarshal(b, &sj); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, StateFile, err)
	}
	st := &State{
		Format: sj.Format, Layer: sj.Layer, Step: sj.Step, NumLayers: sj.NumLayers,
		RNG: sj.RNG, Cursor: sj.Cursor, ModelDigest: sj.ModelDigest,
		Config: compact(sj.Config), History: compact(sj.History),
	}
	if err := st.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, StateFile, err)
	}

	tensorsPath := filepath.Join(path, TensorsFile)
	f, err := safetensors.Open(tensorsPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	defer f.Close()
	sum, err := FileSHA256(tensorsPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if sum != sj.TensorsSHA256 {
		return nil, fmt.Errorf("%w: %s: sha256 %s, %s records %s", ErrCorrupt, TensorsFile, sum, StateFile, sj.TensorsSHA256)
	}
	have := f.Names()
	want := slices.Sorted(slices.Values(sj.Tensors))
	if !slices.Equal(have, want) {
		return nil, fmt.Errorf("%w: %s holds tensors %v, %s lists %v", ErrCorrupt, TensorsFile, have, StateFile, sj.Tensors)
	}
	st.Tensors = make([]Tensor, len(sj.Tensors))
	for i, name := range sj.Tensors {
		if ti, _ := f.Info(name); ti.DType != safetensors.F32 {
			return nil, fmt.Errorf("%w: tensor %q: dtype %s, want F32", ErrCorrupt, name, ti.DType)
		}
		data, shape, err := f.ReadFloat32(name)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if j := nonFinite(data); j >= 0 {
			return nil, fmt.Errorf("tensor %q: element %d is %v: %w: %w", name, j, data[j], ErrNonFinite, ErrCorrupt)
		}
		st.Tensors[i] = Tensor{Name: name, Shape: shape, Data: data}
	}
	return st, nil
}

// compact removes insignificant whitespace from raw JSON (nil stays nil).
func compact(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw // cannot happen: the decoder validated it
	}
	return b.Bytes()
}

// entry is one checkpoint found by List.
type entry struct {
	layer, step int
	path        string
}

// List returns the complete checkpoints in dir, oldest first by (layer,
// step). A checkpoint is complete when its directory has the final name (not
// "*.tmp") and holds both state.json and tensors.safetensors. A missing dir is
// an error wrapping fs.ErrNotExist.
func List(dir string) ([]string, error) {
	es, err := list(dir, true)
	if err != nil {
		return nil, err
	}
	paths := make([]string, len(es))
	for i, e := range es {
		paths[i] = e.path
	}
	return paths, nil
}

// list returns the checkpoint directories of dir by (layer, step); complete
// ones only when complete is set.
func list(dir string, complete bool) ([]entry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint dir: %w", err)
	}
	var es []entry
	for _, de := range des {
		m := dirPattern.FindStringSubmatch(de.Name())
		if m == nil || !de.IsDir() {
			continue
		}
		layer, err1 := strconv.Atoi(m[1])
		step, err2 := strconv.Atoi(m[2])
		if err1 != nil || err2 != nil {
			continue
		}
		p := filepath.Join(dir, de.Name())
		if complete && (!isRegular(filepath.Join(p, StateFile)) || !isRegular(filepath.Join(p, TensorsFile))) {
			continue
		}
		es = append(es, entry{layer, step, p})
	}
	slices.SortFunc(es, func(a, b entry) int {
		if a.layer != b.layer {
			return a.layer - b.layer
		}
		return a.step - b.step
	})
	return es, nil
}

func isRegular(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// Latest returns the path of the newest complete checkpoint in dir by (layer,
// step), or an error wrapping ErrNoCheckpoint when there is none.
func Latest(dir string) (string, error) {
	es, err := list(dir, true)
	if err != nil {
		return "", err
	}
	if len(es) == 0 {
		return "", fmt.Errorf("checkpoint dir %s: %w", dir, ErrNoCheckpoint)
	}
	return es[len(es)-1].path, nil
}

// Prune deletes all but the newest keep complete checkpoints in dir. keep must
// be at least 1, so the resume point always survives. Directories that are
// not complete checkpoints are left alone.
func Prune(dir string, keep int) error {
	if keep < 1 {
		return fmt.Errorf("checkpoint prune %s: keep %d, must be at least 1", dir, keep)
	}
	es, err := list(dir, true)
	if err != nil {
		return err
	}
	for _, e := range es[:max(0, len(es)-keep)] {
		if err := os.RemoveAll(e.path); err != nil {
			return fmt.Errorf("checkpoint prune: %w", err)
		}
	}
	return nil
}
