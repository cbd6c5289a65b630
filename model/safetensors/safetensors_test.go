package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// rawFile assembles a safetensors file by hand: length, header, data.
func rawFile(header string, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(header)))
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func writeRaw(t *testing.T, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestReadHandBuilt reads a file assembled byte by byte, independently of
// Write: F32, F16 and BF16 encodings of known values.
func TestReadHandBuilt(t *testing.T) {
	var data bytes.Buffer
	for _, v := range []float32{1, -2.5, 3.25, 0} { // "a": F32 (2, 2) at [0, 16)
		binary.Write(&data, binary.LittleEndian, math.Float32bits(v))
	}
	// "b": F16 (3) at [16, 22): 1.0, -2.0, 65504 (max half).
	binary.Write(&data, binary.LittleEndian, []uint16{0x3c00, 0xc000, 0x7bff})
	// "c": BF16 (2) at [22, 26): 1.0, -0.5.
	binary.Write(&data, binary.LittleEndian, []uint16{0x3f80, 0xbf00})
	hdr := `{"b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},` +
		`"__metadata__":{"format":"pt"},` +
		`"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},` +
		`"c":{"dtype":"BF16","shape":[2],"data_offsets":[22,26]}}  `
	path := writeRaw(t, "hand.safetensors", rawFile(hdr, data.Bytes()))

	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Names(); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("Names = %v", got)
	}
	if md := f.Metadata(); !reflect.DeepEqual(md, map[string]string{"format": "pt"}) {
		t.Errorf("Metadata = %v", md)
	}
	ti, ok := f.Info("b")
	want := TensorInfo{Name: "b", DType: F16, Shape: []int{3}, Begin: 16, End: 22}
	if !ok || !reflect.DeepEqual(ti, want) {
		t.Errorf("Info(b) = %+v, %v; want %+v", ti, ok, want)
	}
	for _, tc := range []struct {
		name  string
		shape []int
		want  []float32
	}{
		{"a", []int{2, 2}, []float32{1, -2.5, 3.25, 0}},
		{"b", []int{3}, []float32{1, -2, 65504}},
		{"c", []int{2}, []float32{1, -0.5}},
	} {
		got, shape, err := f.ReadFloat32(tc.name)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(shape, tc.shape) || !bitsEqual(got, tc.want) {
			t.Errorf("%s: got %v %v, want %v %v", tc.name, got, shape, tc.want, tc.shape)
		}
	}
	if _, _, err := f.ReadFloat32("zzz"); err == nil || !strings.Contains(err.Error(), `"zzz"`) {
		t.Errorf("missing tensor: err = %v", err)
	}
	if _, ok := f.Info("zzz"); ok {
		t.Error("Info of a missing tensor reported ok")
	}
}

func TestRoundTrip(t *testing.T) {
	// Values exact in F16 and BF16, plus ties that must round to even:
	// F16 ulp at 1 is 2^-10, BF16 ulp at 1 is 2^-7.
	exact := []float32{0, 1, -2, 0.5, 0.25, 96, -0.125, float32(math.Inf(1))}
	f32 := []float32{1.1, -3.3e-20, math.MaxFloat32, math.SmallestNonzeroFloat32, math.Float32frombits(0x7fc00001), 0, -0}
	f16in := append(append([]float32{}, exact...), 1+1.0/2048, 1+3.0/2048)
	f16want := append(append([]float32{}, exact...), 1, 1+1.0/512)
	bf16in := append(append([]float32{}, exact...), 1+1.0/256, 1+3.0/256)
	bf16want := append(append([]float32{}, exact...), 1, 1+1.0/64)
	md := map[string]string{"format": "pt", "note": "<&> ünïcode"}

	path := filepath.Join(t.TempDir(), "rt.safetensors")
	in := []Tensor{
		{Name: "z.f32", Shape: []int{7}, DType: F32, Data: f32},
		{Name: "a.f16", Shape: []int{2, 5}, DType: F16, Data: f16in},
		{Name: "m.bf16", Shape: []int{10, 1}, DType: BF16, Data: bf16in},
		{Name: "scalar", Shape: nil, DType: F32, Data: []float32{42}},
		{Name: "empty", Shape: []int{0, 3}, DType: BF16, Data: nil},
	}
	if err := Write(path, in, md); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Metadata(); !reflect.DeepEqual(got, md) {
		t.Errorf("metadata = %v, want %v", got, md)
	}
	if got, want := f.Names(), []string{"a.f16", "empty", "m.bf16", "scalar", "z.f32"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		name  string
		dt    DType
		shape []int
		want  []float32
	}{
		{"z.f32", F32, []int{7}, f32},
		{"a.f16", F16, []int{2, 5}, f16want},
		{"m.bf16", BF16, []int{10, 1}, bf16want},
		{"scalar", F32, []int{}, []float32{42}},
		{"empty", BF16, []int{0, 3}, []float32{}},
	} {
		got, shape, err := f.ReadFloat32(tc.name)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(shape, tc.shape) || !bitsEqual(got, tc.want) {
			t.Errorf("%s: got %v %v, want %v %v", tc.name, got, shape, tc.want, tc.shape)
		}
		if ti, _ := f.Info(tc.name); ti.DType != tc.dt {
			t.Errorf("%s: dtype %s, want %s", tc.name, ti.DType, tc.dt)
		}
	}
}

// TestWriteLayout checks the bytes Write produces with a hand parser: the
// header is space-padded to a multiple of 8, tensors are laid out in name
// order back to back, and data is little-endian.
func TestWriteLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "layout.safetensors")
	err := Write(path, []Tensor{
		{Name: "b", Shape: []int{1}, DType: F16, Data: []float32{1}},
		{Name: "a", Shape: []int{1, 2}, DType: F32, Data: []float32{1, -2}},
		{Name: "c", Shape: []int{1}, DType: BF16, Data: []float32{-0.5}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	if n%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", n)
	}
	hdr := b[8 : 8+n]
	if strings.TrimRight(string(hdr), " ") != strings.TrimSpace(string(hdr)) || hdr[0] != '{' {
		t.Errorf("header padding is not trailing spaces: %q", hdr)
	}
	var h map[string]struct {
		DType   string  `json:"dtype"`
		Shape   []int   `json:"shape"`
		Offsets []int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(hdr, &h); err != nil {
		t.Fatal(err)
	}
	if _, ok := h[metadataKey]; ok || len(h) != 3 {
		t.Errorf("header keys: %v", h)
	}
	if h["a"].DType != "F32" || !reflect.DeepEqual(h["a"].Offsets, []int64{0, 8}) ||
		!reflect.DeepEqual(h["b"].Offsets, []int64{8, 10}) || !reflect.DeepEqual(h["c"].Offsets, []int64{10, 12}) {
		t.Errorf("header: %+v", h)
	}
	want := []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0x00, 0x3c, 0x00, 0xbf}
	if data := b[8+n:]; !bytes.Equal(data, want) {
		t.Errorf("data = % x, want % x", data, want)
	}
}

// TestLargeTensorChunks reads tensors that span several read chunks.
func TestLargeTensorChunks(t *testing.T) {
	n := readChunk/4*2 + 3 // F32: 2 full chunks and a bit
	a := make([]float32, n)
	h := make([]float32, n) // F16: more than one chunk too
	for i := range a {
		a[i] = float32(i) * 0.5
		h[i] = float32(i % 2048)
	}
	path := filepath.Join(t.TempDir(), "big.safetensors")
	fill := func(dst []float32, off int) error { copy(dst, a[off:]); return nil } // "c" = "a", supplied in pieces
	if err := Write(path, []Tensor{{Name: "a", Shape: []int{n}, DType: F32, Data: a}, {Name: "h", Shape: []int{n}, DType: F16, Data: h},
		{Name: "c", Shape: []int{n}, DType: F32, Fill: fill}}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, want := range map[string][]float32{"a": a, "h": h, "c": a} {
		got, _, err := f.ReadFloat32(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bitsEqual(got, want) {
			t.Errorf("%s: round trip differs", name)
		}
		// A range across a chunk boundary, read alone.
		part := make([]float32, readChunk/4+7)
		if err := f.ReadFloat32At(name, part, readChunk/8); err != nil {
			t.Fatal(err)
		}
		if !bitsEqual(part, want[readChunk/8:readChunk/8+len(part)]) {
			t.Errorf("%s: ReadFloat32At differs", name)
		}
	}
	if err := f.ReadFloat32At("a", make([]float32, 4), n-3); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("ReadFloat32At past the end: %v, want an error naming the range", err)
	}
}

// countingReader records the highest byte offset read.
type countingReader struct {
	r   *bytes.Reader
	max int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.max = max(c.max, off+int64(n))
	return n, err
}

func TestOpenReadsOnlyHeader(t *testing.T) {
	hdr := `{"x":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}`
	b := rawFile(hdr, make([]byte, 4000))
	cr := &countingReader{r: bytes.NewReader(b)}
	f, err := NewFile(cr, int64(len(b)), "mem")
	if err != nil {
		t.Fatal(err)
	}
	if cr.max != int64(8+len(hdr)) {
		t.Errorf("NewFile read up to byte %d, header ends at %d", cr.max, 8+len(hdr))
	}
	if _, _, err := f.ReadFloat32("x"); err != nil {
		t.Fatal(err)
	}
	if cr.max != int64(len(b)) {
		t.Errorf("after reading x, max offset %d, want %d", cr.max, len(b))
	}
}

// TestOpenSparseHuge opens a 64 GiB sparse file: only the header is touched.
func TestOpenSparseHuge(t *testing.T) {
	const bytesBig = int64(1) << 36
	hdr := `{"big":{"dtype":"F32","shape":[131072,131072],"data_offsets":[0,68719476736]}}`
	path := writeRaw(t, "huge.safetensors", rawFile(hdr, nil))
	if err := os.Truncate(path, 8+int64(len(hdr))+bytesBig); err != nil {
		t.Skipf("cannot make a sparse file here: %v", err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ti, ok := f.Info("big")
	if !ok || ti.End != bytesBig || ti.NumElements() != 1<<34 {
		t.Errorf("Info = %+v", ti)
	}
}

func TestOpenErrors(t *testing.T) {
	f32 := func(name, shape, offs string) string {
		return `"` + name + `":{"dtype":"F32","shape":` + shape + `,"data_offsets":` + offs + `}`
	}
	data16 := make([]byte, 16)
	tests := []struct {
		name     string
		file     []byte
		sentinel error
		msg      string
	}{
		{"too short", []byte{1, 2, 3}, ErrFormat, "no header length"},
		{"absurd header length", binary.LittleEndian.AppendUint64(nil, 1<<40), ErrFormat, "exceeds the 100000000-byte limit"},
		{"header beyond file", append(binary.LittleEndian.AppendUint64(nil, 100), `{"a":1}`...), ErrFormat, "header length 100 exceeds"},
		{"bad json", rawFile(`{"a":{"dtype":"F32",`, nil), ErrFormat, "header"},
		{"not an object", rawFile(`[1,2]`, nil), ErrFormat, "not a JSON object"},
		{"trailing garbage", rawFile(`{}x`, nil), ErrFormat, "trailing data"},
		{"duplicate key", rawFile(`{`+f32("a", "[1]", "[0,4]")+`,`+f32("a", "[1]", "[4,8]")+`}`, data16), ErrFormat, `duplicate key "a"`},
		{"missing field", rawFile(`{"a":{"dtype":"F32","shape":[1]}}`, data16), ErrFormat, `"a": needs dtype, shape and data_offsets`},
		{"offsets count", rawFile(`{`+f32("a", "[1]", "[0,4,8]")+`}`, data16), ErrFormat, "has 3 values"},
		{"offsets out of bounds", rawFile(`{`+f32("a", "[5]", "[0,20]")+`}`, data16), ErrFormat, `"a": data_offsets [0, 20] outside data section of 16 bytes`},
		{"offsets reversed", rawFile(`{`+f32("a", "[0]", "[8,4]")+`}`, data16), ErrFormat, "outside data section"},
		{"negative offset", rawFile(`{`+f32("a", "[1]", "[-4,0]")+`}`, data16), ErrFormat, "outside data section"},
		{"size mismatch", rawFile(`{`+f32("a", "[3]", "[0,16]")+`}`, data16), ErrFormat, `"a": F32 shape [3] needs 12 bytes, data_offsets give 16`},
		{"numel overflow", rawFile(`{`+f32("a", "[4611686018427387904,4611686018427387904,4]", "[0,0]")+`}`, data16), ErrFormat, "needs more than"},
		{"numel wraps to size", rawFile(`{`+f32("a", "[4611686018427387904,4]", "[0,16]")+`}`, data16), ErrFormat, "needs more than"},
		{"negative dim", rawFile(`{`+f32("a", "[-1,-4]", "[0,16]")+`}`, data16), ErrFormat, "bad dimension -1"},
		{"fractional dim", rawFile(`{`+f32("a", "[1.5]", "[0,4]")+`}`, data16), ErrFormat, `"a"`},
		{"unsupported dtype", rawFile(`{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}`, data16), ErrUnsupported, `tensor "ids": dtype "I64"`},
		{"overlapping", rawFile(`{`+f32("a", "[2]", "[0,8]")+`,`+f32("b", "[2]", "[4,12]")+`}`, data16), ErrFormat, `"a" [0, 8] and "b" [4, 12] overlap`},
		{"metadata not strings", rawFile(`{"__metadata__":{"n":1}}`, nil), ErrFormat, "__metadata__ must map strings to strings"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeRaw(t, "bad.safetensors", tc.file)
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tc.sentinel) {
				t.Errorf("error %q does not wrap %v", err, tc.sentinel)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestOpenNotAFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.safetensors")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: err = %v", err)
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	good := []Tensor{{Name: "x", Shape: []int{2}, DType: F32, Data: []float32{1, 2}}}
	if err := Write(path, good, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	tests := []struct {
		name    string
		tensors []Tensor
		msg     string
	}{
		{"duplicate", []Tensor{good[0], good[0]}, `duplicate tensor name "x"`},
		{"shape mismatch", []Tensor{{Name: "y", Shape: []int{3}, DType: F32, Data: []float32{1}}}, `"y": shape [3] needs 3 values, have 1`},
		{"shape overflow", []Tensor{{Name: "y", Shape: []int{1 << 33, 1 << 31}, DType: F32}}, `"y": invalid shape`},
		{"negative dim", []Tensor{{Name: "y", Shape: []int{-1, -1}, DType: F32, Data: []float32{1}}}, `"y": invalid shape`},
		{"unsupported", []Tensor{{Name: "y", Shape: []int{1}, DType: "I8", Data: []float32{1}}}, `dtype "I8"`},
		{"reserved name", []Tensor{{Name: "__metadata__", Shape: []int{1}, DType: F32, Data: []float32{1}}}, "invalid tensor name"},
		{"f16 overflow", []Tensor{{Name: "y", Shape: []int{2}, DType: F16, Data: []float32{1, 70000}}}, `"y": element 1 (70000) overflows F16`},
		{"bf16 overflow", []Tensor{{Name: "y", Shape: []int{1}, DType: BF16, Data: []float32{math.MaxFloat32}}}, "overflows BF16"},
	}
	for _, tc := range tests {
		err := Write(path, tc.tensors, nil)
		if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: err = %v, want mention of %q and the path", tc.name, err, tc.msg)
		}
	}
	if err := Write(filepath.Join(dir, "y"), []Tensor{{Name: "y", Shape: []int{1}, DType: "I8", Data: []float32{1}}}, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unsupported dtype: err = %v does not wrap ErrUnsupported", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("failed writes changed the existing file")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only w.safetensors (no temp files)", names)
	}
	if err := Write(filepath.Join(dir, "no", "such", "dir.safetensors"), good, nil); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

func writeIndex(t *testing.T, dir string, weightMap map[string]string) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 123}, "weight_map": weightMap})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, IndexFileName), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOpenDirSharded(t *testing.T) {
	dir := t.TempDir()
	s1 := filepath.Join(dir, "model-00001-of-00002.safetensors")
	s2 := filepath.Join(dir, "model-00002-of-00002.safetensors")
	if err := Write(s1, []Tensor{
		{Name: "layers.0.w", Shape: []int{2}, DType: BF16, Data: []float32{1, 2}},
		{Name: "embed", Shape: []int{1, 2}, DType: F32, Data: []float32{3, 4}},
	}, map[string]string{"format": "pt", "shard": "1"}); err != nil {
		t.Fatal(err)
	}
	if err := Write(s2, []Tensor{
		{Name: "layers.1.w", Shape: []int{3}, DType: F16, Data: []float32{5, 6, 7}},
	}, map[string]string{"format": "pt", "shard": "2", "extra": "x"}); err != nil {
		t.Fatal(err)
	}
	writeIndex(t, dir, map[string]string{
		"embed":      filepath.Base(s1),
		"layers.0.w": filepath.Base(s1),
		"layers.1.w": filepath.Base(s2),
	})
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, want := s.Names(), []string{"embed", "layers.0.w", "layers.1.w"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
	want := map[string][]float32{"embed": {3, 4}, "layers.0.w": {1, 2}, "layers.1.w": {5, 6, 7}}
	for name, w := range want {
		got, _, err := s.ReadFloat32(name)
		if err != nil || !bitsEqual(got, w) {
			t.Errorf("%s: %v, %v; want %v", name, got, err, w)
		}
	}
	if ti, ok := s.Info("layers.1.w"); !ok || ti.DType != F16 || !reflect.DeepEqual(ti.Shape, []int{3}) {
		t.Errorf("Info = %+v, %v", ti, ok)
	}
	if md := s.Metadata(); !reflect.DeepEqual(md, map[string]string{"format": "pt", "shard": "1", "extra": "x"}) {
		t.Errorf("Metadata = %v", md)
	}
	if _, _, err := s.ReadFloat32("nope"); err == nil {
		t.Error("reading a missing tensor succeeded")
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

func TestOpenDirSingle(t *testing.T) {
	dir := t.TempDir()
	if err := Write(filepath.Join(dir, SingleFileName), []Tensor{{Name: "w", Shape: []int{1}, DType: F32, Data: []float32{9}}}, nil); err != nil {
		t.Fatal(err)
	}
	// A stale index naming a missing shard is ignored when model.safetensors exists.
	writeIndex(t, dir, map[string]string{"w": "gone.safetensors"})
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, _, err := s.ReadFloat32("w"); err != nil || !bitsEqual(got, []float32{9}) {
		t.Errorf("w = %v, %v", got, err)
	}
}

func TestOpenDirErrors(t *testing.T) {
	shard := "s.safetensors"
	mk := func(t *testing.T) string {
		dir := t.TempDir()
		if err := Write(filepath.Join(dir, shard), []Tensor{{Name: "a", Shape: []int{1}, DType: F32, Data: []float32{1}}}, nil); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name  string
		index any // nil: no index file
		msg   string
	}{
		{"no weights", nil, "neither model.safetensors nor model.safetensors.index.json"},
		{"missing shard", map[string]any{"weight_map": map[string]string{"a": shard, "b": "other.safetensors"}}, `shard "other.safetensors"`},
		{"tensor not in shard", map[string]any{"weight_map": map[string]string{"a": shard, "b": shard}}, `tensor "b": not in its shard`},
		{"shard escapes dir", map[string]any{"weight_map": map[string]string{"a": "../" + shard}}, "not a plain file name"},
		{"no weight map", map[string]any{"metadata": map[string]any{}}, "missing weight_map"},
		{"bad index json", "{", "model.safetensors.index.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := mk(t)
			switch ix := tc.index.(type) {
			case string:
				os.WriteFile(filepath.Join(dir, IndexFileName), []byte(ix), 0o644)
			case map[string]any:
				b, _ := json.Marshal(ix)
				os.WriteFile(filepath.Join(dir, IndexFileName), b, 0o644)
			}
			s, err := OpenDir(dir)
			if err == nil {
				s.Close()
				t.Fatal("OpenDir succeeded")
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
	if _, err := OpenDir(filepath.Join(t.TempDir(), "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: err = %v", err)
	}
}
