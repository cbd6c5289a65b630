package checkpoints

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sampleState builds a state whose tensors include values that only survive
// a bit-exact round trip: subnormals, -0, extremes, and random bits.
func sampleState(layer, step int) *State {
	r := rand.New(rand.NewPCG(uint64(layer), uint64(step)))
	rnd := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			for {
				x[i] = math.Float32frombits(r.Uint32())
				if f := float64(x[i]); !math.IsNaN(f) && !math.IsInf(f, 0) {
					break
				}
			}
		}
		return x
	}
	pcg := rand.NewPCG(7, uint64(step))
	rngState, _ := pcg.MarshalBinary()
	return &State{
		Layer: layer, Step: step, NumLayers: 4,
		RNG:         rngState,
		Cursor:      int64(step) * 1000,
		Config:      json.RawMessage(`{"rank":8,"lr":0.001,"note":"<a&b>"}`),
		ModelDigest: "sha256:abc123",
		Tensors: []Tensor{
			{Name: "layer.0.A", Shape: []int{2, 3}, Data: rnd(6)},
			{Name: "cur.Bk", Shape: []int{3, 2}, Data: []float32{math.SmallestNonzeroFloat32, float32(math.Copysign(0, -1)), math.MaxFloat32, -math.MaxFloat32, 1e-40, 1}},
			{Name: "adam.T", Shape: []int{}, Data: []float32{float32(step)}},
			{Name: "adam.M", Shape: []int{0, 5}, Data: []float32{}},
			{Name: "adam.V", Shape: []int{7}, Data: rnd(7)},
		},
		History: json.RawMessage(`[{"layer":0,"loss":[1.5,1.25]}]`),
	}
}

func requireStateEqual(t *testing.T, got, want *State) {
	t.Helper()
	if got.Format != FormatVersion || got.Layer != want.Layer || got.Step != want.Step || got.NumLayers != want.NumLayers ||
		got.Cursor != want.Cursor || got.ModelDigest != want.ModelDigest {
		t.Errorf("scalars: got %+v", got)
	}
	if string(got.RNG) != string(want.RNG) || string(got.Config) != string(want.Config) || string(got.History) != string(want.History) {
		t.Errorf("opaque fields: RNG %x/%x, Config %s/%s, History %s/%s", got.RNG, want.RNG, got.Config, want.Config, got.History, want.History)
	}
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for i, w := range want.Tensors {
		g := got.Tensors[i]
		wantShape := w.Shape
		if wantShape == nil {
			wantShape = []int{}
		}
		if g.Name != w.Name || !reflect.DeepEqual(g.Shape, wantShape) || len(g.Data) != len(w.Data) {
			t.Errorf("tensor %d: got %s %v (%d values), want %s %v (%d values)", i, g.Name, g.Shape, len(g.Data), w.Name, wantShape, len(w.Data))
			continue
		}
		for j := range w.Data {
			if math.Float32bits(g.Data[j]) != math.Float32bits(w.Data[j]) {
				t.Errorf("tensor %s[%d]: bits %08x, want %08x", w.Name, j, math.Float32bits(g.Data[j]), math.Float32bits(w.Data[j]))
			}
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := sampleState(2, 150)
	path, err := Save(dir, want)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "ckpt-L02-S000150" || filepath.Dir(path) != dir {
		t.Errorf("path = %s", path)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	requireStateEqual(t, got, want)

	// The restored RNG continues the same stream.
	a, b := rand.NewPCG(0, 0), rand.NewPCG(7, 150)
	if err := a.UnmarshalBinary(got.RNG); err != nil {
		t.Fatal(err)
	}
	if a.Uint64() != b.Uint64() {
		t.Error("restored RNG diverges")
	}

	// state.json is readable JSON with the magic and version.
	raw, err := os.ReadFile(filepath.Join(path, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m["magic"] != Magic || m["format"] != float64(FormatVersion) {
		t.Errorf("state.json: %v, %v", m, err)
	}
	// Nothing else is left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want 1", len(entries))
	}
}

func TestSaveNilOpaqueFields(t *testing.T) {
	st := &State{Layer: 4, Step: 0, NumLayers: 4} // finished run, no tensors
	path, err := Save(t.TempDir(), st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.RNG != nil || got.Config != nil || got.History != nil || len(got.Tensors) != 0 || got.Layer != 4 {
		t.Errorf("got %+v", got)
	}
}

func TestSaveReplacesExisting(t *testing.T) {
	dir := t.TempDir()
	first := sampleState(1, 10)
	if _, err := Save(dir, first); err != nil {
		t.Fatal(err)
	}
	second := sampleState(1, 10)
	second.Cursor = 999
	second.Tensors = second.Tensors[:1]
	path, err := Save(dir, second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	requireStateEqual(t, got, second)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "ckpt-L01-S000010" {
		t.Errorf("dir entries: %v", entries)
	}
}

func TestSaveRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*State)
		msg    string
		is     error
	}{
		{"nan", func(s *State) { s.Tensors[0].Data[3] = float32(math.NaN()) }, `tensor "layer.0.A": element 3 is NaN`, ErrNonFinite},
		{"inf", func(s *State) { s.Tensors[4].Data[0] = float32(math.Inf(-1)) }, `tensor "adam.V": element 0 is -Inf`, ErrNonFinite},
		{"shape", func(s *State) { s.Tensors[0].Shape = []int{4, 3} }, `"layer.0.A": shape [4 3] needs 12 values, have 6`, nil},
		{"duplicate", func(s *State) { s.Tensors[1].Name = "layer.0.A" }, `duplicate tensor "layer.0.A"`, nil},
		{"layer", func(s *State) { s.Layer = 5 }, "layer 5 outside [0, 4]", nil},
		{"step", func(s *State) { s.Step = -1 }, "negative step", nil},
		{"version", func(s *State) { s.Format = 2 }, "state format 2", ErrIncompatible},
		{"config", func(s *State) { s.Config = json.RawMessage(`{bad`) }, "not valid JSON", nil},
	}
	for _, tc := range tests {
		dir := t.TempDir()
		st := sampleState(1, 1)
		tc.modify(st)
		_, err := Save(dir, st)
		if err == nil || !strings.Contains(err.Error(), tc.msg) || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.msg)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s: failed Save left %v", tc.name, entries)
		}
	}
}

func TestLatestAndList(t *testing.T) {
	dir := t.TempDir()
	if _, err := Latest(dir); !errors.Is(err, ErrNoCheckpoint) {
		t.Errorf("empty dir: err = %v", err)
	}
	if _, err := Latest(filepath.Join(dir, "absent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: err = %v", err)
	}
	for _, ls := range [][2]int{{0, 200}, {1, 50}, {0, 999999}, {1, 100}, {0, 1}} {
		if _, err := Save(dir, sampleState(ls[0], ls[1])); err != nil {
			t.Fatal(err)
		}
	}
	// Distractors: a newer-looking *.tmp, an incomplete dir with the final
	// name, a stray file, and names that do not match the pattern.
	if _, err := Save(dir, sampleState(3, 5)); err != nil {
		t.Fatal(err)
	}
	os.Rename(filepath.Join(dir, "ckpt-L03-S000005"), filepath.Join(dir, "ckpt-L03-S000005.tmp"))
	os.Mkdir(filepath.Join(dir, "ckpt-L02-S000001"), 0o755)
	os.WriteFile(filepath.Join(dir, "ckpt-L02-S000002"), nil, 0o644)
	os.Mkdir(filepath.Join(dir, "ckpt-L9-S1"), 0o755)
	os.Mkdir(filepath.Join(dir, "ckpt-L02-S000003.old"), 0o755)

	got, err := Latest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "ckpt-L01-S000100"); got != want {
		t.Errorf("Latest = %s, want %s", got, want)
	}
	all, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range all {
		names = append(names, filepath.Base(p))
	}
	want := []string{"ckpt-L00-S000001", "ckpt-L00-S000200", "ckpt-L00-S999999", "ckpt-L01-S000050", "ckpt-L01-S000100"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("List = %v, want %v", names, want)
	}
	// Wider numbers than the padding still order numerically.
	if _, err := Save(dir, &State{Layer: 1, Step: 1234567, NumLayers: 2}); err != nil {
		t.Fatal(err)
	}
	if got, _ := Latest(dir); filepath.Base(got) != "ckpt-L01-S1234567" {
		t.Errorf("Latest = %s, want ckpt-L01-S1234567", got)
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	for _, ls := range [][2]int{{0, 10}, {0, 20}, {1, 5}, {1, 15}, {2, 0}} {
		if _, err := Save(dir, sampleState(ls[0], ls[1])); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "ckpt-L00-S000001.tmp"), 0o755)
	if err := Prune(dir, 0); err == nil {
		t.Error("Prune(0) succeeded")
	}
	if err := Prune(dir, 2); err != nil {
		t.Fatal(err)
	}
	all, _ := List(dir)
	if len(all) != 2 || filepath.Base(all[0]) != "ckpt-L01-S000015" || filepath.Base(all[1]) != "ckpt-L02-S000000" {
		t.Errorf("after Prune(2): %v", all)
	}
	if _, err := os.Stat(filepath.Join(dir, "ckpt-L00-S000001.tmp")); err != nil {
		t.Errorf("Prune touched a non-checkpoint dir: %v", err)
	}
	if err := Prune(dir, 5); err != nil {
		t.Fatal(err)
	}
	if all, _ := List(dir); len(all) != 2 {
		t.Errorf("Prune(5) with 2 checkpoints left %d", len(all))
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
		is     error
		msg    string
	}{
		{"missing state.json", func(t *testing.T, p string) { os.Remove(filepath.Join(p, StateFile)) }, ErrCorrupt, StateFile},
		{"missing tensors", func(t *testing.T, p string) { os.Remove(filepath.Join(p, TensorsFile)) }, ErrCorrupt, TensorsFile},
		{"truncated tensors", func(t *testing.T, p string) {
			fp := filepath.Join(p, TensorsFile)
			fi, _ := os.Stat(fp)
			os.Truncate(fp, fi.Size()-5)
		}, ErrCorrupt, "outside data section"},
		{"truncated state.json", func(t *testing.T, p string) {
			fp := filepath.Join(p, StateFile)
			fi, _ := os.Stat(fp)
			os.Truncate(fp, fi.Size()/2)
		}, ErrCorrupt, StateFile},
		{"flipped bit", func(t *testing.T, p string) {
			fp := filepath.Join(p, TensorsFile)
			b, _ := os.ReadFile(fp)
			b[len(b)-3] ^= 0x01
			os.WriteFile(fp, b, 0o644)
		}, ErrCorrupt, "sha256"},
		{"wrong version", func(t *testing.T, p string) { editState(t, p, "format", 2) }, ErrIncompatible, "format version 2"},
		{"wrong magic", func(t *testing.T, p string) { editState(t, p, "magic", "other") }, ErrCorrupt, `magic "other"`},
		{"tensor list", func(t *testing.T, p string) { editState(t, p, "tensors", []string{"layer.0.A"}) }, ErrCorrupt, "lists"},
		{"bad layer", func(t *testing.T, p string) { editState(t, p, "layer", 9) }, ErrCorrupt, "layer 9 outside"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, err := Save(t.TempDir(), sampleState(1, 7))
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, path)
			_, err = Load(path)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), path) {
				t.Errorf("err = %v, want %v mentioning %q and the path", err, tc.is, tc.msg)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing checkpoint: err = %v", err)
	}
}

// TestLoadNonFinite writes a NaN into a checkpoint behind Save's back (with a
// matching checksum) and expects Load to name the tensor.
func TestLoadNonFinite(t *testing.T) {
	path, err := Save(t.TempDir(), sampleState(0, 3))
	if err != nil {
		t.Fatal(err)
	}
	fp := filepath.Join(path, TensorsFile)
	b, _ := os.ReadFile(fp)
	// The last tensor in name order is "layer.0.A"; its last element ends the file.
	copy(b[len(b)-4:], []byte{0x00, 0x00, 0xc0, 0x7f}) // quiet NaN
	os.WriteFile(fp, b, 0o644)
	sum, _ := FileSHA256(fp)
	editState(t, path, "tensors_sha256", sum)
	_, err = Load(path)
	if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), `tensor "layer.0.A": element 5 is NaN`) {
		t.Errorf("err = %v", err)
	}
}

// editState rewrites one field of a checkpoint's state.json.
func editState(t *testing.T, path, key string, value any) {
	t.Helper()
	fp := filepath.Join(path, StateFile)
	b, err := os.ReadFile(fp)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m[key] = value
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fp, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
