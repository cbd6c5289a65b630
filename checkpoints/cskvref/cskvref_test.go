package cskvref

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/kv"
)

// randomProjections has distinct K and V ranks so that a swapped side or a
// transposed factor shows as a shape error, and values with all mantissa
// bits in use so that any rounding shows as a bit difference.
func randomProjections(layers, hidden, kvDim, kRank, vRank int, seed uint64) *checkpoints.Projections {
	r := rand.New(rand.NewPCG(seed, 1))
	v := func(n int) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(r.NormFloat64()) * 0.37
		}
		return out
	}
	p := &checkpoints.Projections{Hidden: hidden, KVDim: kvDim}
	for range layers {
		p.Layers = append(p.Layers, kv.Factors{
			Ak: v(kRank * hidden), Bk: v(kvDim * kRank), Av: v(vRank * hidden), Bv: v(kvDim * vRank), KRank: kRank, VRank: vRank})
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

func sameFactors(t *testing.T, got, want *checkpoints.Projections) {
	t.Helper()
	if got.Hidden != want.Hidden || got.KVDim != want.KVDim || len(got.Layers) != len(want.Layers) {
		t.Fatalf("got hidden %d kv_dim %d layers %d, want %d %d %d", got.Hidden, got.KVDim, len(got.Layers), want.Hidden, want.KVDim, len(want.Layers))
	}
	for i := range want.Layers {
		g, w := got.Layers[i], want.Layers[i]
		if g.KRank != w.KRank || g.VRank != w.VRank {
			t.Fatalf("layer %d ranks %d/%d, want %d/%d", i, g.KRank, g.VRank, w.KRank, w.VRank)
		}
		for _, c := range []struct {
			name string
			g, w []float32
		}{{"Ak", g.Ak, w.Ak}, {"Bk", g.Bk, w.Bk}, {"Av", g.Av, w.Av}, {"Bv", g.Bv, w.Bv}} {
			if !bitsEqual(c.g, c.w) {
				t.Fatalf("layer %d %s differs", i, c.name)
			}
		}
	}
}

var defaultName = Name{KDensity: 0.25, VDensity: 0.75, KBits: 16, VBits: 16}

func TestRoundTripBitIdentical(t *testing.T) {
	dir := t.TempDir()
	want := randomProjections(3, 16, 8, 4, 6, 1)
	kPath, vPath, err := Write(dir, defaultName, want)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(kPath) != "density_k_0.25_v_0.75_quant_k_16_v_16__k.ckpt" ||
		filepath.Base(vPath) != "density_k_0.25_v_0.75_quant_k_16_v_16__v.ckpt" {
		t.Fatalf("file names %s, %s", kPath, vPath)
	}
	got, err := Read(kPath, vPath)
	if err != nil {
		t.Fatal(err)
	}
	sameFactors(t, got, want)
	for k, v := range map[string]string{"k_rank": "4", "v_rank": "6", "k_density": "0.25", "v_density": "0.75",
		"k_bits": "16", "v_bits": "16", "rope_layout": "hf-rotate-half", "source_format": Format} {
		if got.Meta[k] != v {
			t.Errorf("meta %s = %q, want %q", k, got.Meta[k], v)
		}
	}
}

func TestDeterministicBytes(t *testing.T) {
	p := randomProjections(2, 8, 4, 2, 3, 2)
	var a, b bytes.Buffer
	if err := WriteSide(&a, "x", p, K); err != nil {
		t.Fatal(err)
	}
	if err := WriteSide(&b, "x", p, K); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes of the same factors differ")
	}
}

// TestArchiveLayout checks with archive/zip what torch.load's reader needs:
// one folder named after the file, version/byteorder/data.pkl records,
// stored records with their bytes on 64-byte boundaries.
func TestArchiveLayout(t *testing.T) {
	dir := t.TempDir()
	kPath, _, err := Write(dir, defaultName, randomProjections(2, 8, 4, 2, 3, 3))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(kPath)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	folder := "density_k_0.25_v_0.75_quant_k_16_v_16__k"
	seen := map[string]string{}
	for _, f := range zr.File {
		rest, ok := strings.CutPrefix(f.Name, folder+"/")
		if !ok {
			t.Fatalf("record %s outside folder %s", f.Name, folder)
		}
		if f.Method != zip.Store {
			t.Fatalf("record %s compressed (method %d)", f.Name, f.Method)
		}
		off, err := f.DataOffset()
		if err != nil {
			t.Fatal(err)
		}
		if off%64 != 0 { // torch.save's alignment
			t.Fatalf("record %s data at %d, not a multiple of 64", f.Name, off)
		}
		rc, _ := f.Open()
		var b bytes.Buffer
		if _, err := b.ReadFrom(rc); err != nil {
			t.Fatalf("record %s: %v", f.Name, err)
		}
		seen[rest] = b.String()
	}
	if seen["version"] != "3\n" || seen["byteorder"] != "little" || seen["data.pkl"] == "" {
		t.Fatalf("records: version %q byteorder %q data.pkl %d bytes", seen["version"], seen["byteorder"], len(seen["data.pkl"]))
	}
	for i := range 4 { // 2 layers × (A, B)
		if _, ok := seen["data/"+string(rune('0'+i))]; !ok {
			t.Fatalf("storage record data/%d missing; have %v", i, keys(seen))
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestIndependentPythonReader parses the written files with Python's own
// zipfile and pickle (no torch, no code shared with this package), checking
// opcodes and globals against what a weights-only torch.load accepts, and
// compares every tensor's bytes. The gopickle-based reader above is the
// independent Go-side check that runs everywhere; this one runs where
// python3 is installed (it is on the development and CI machines).
func TestIndependentPythonReader(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed: the independent Python reader is not run (the Go-side reader still checked the files)")
	}
	dir := t.TempDir()
	want := randomProjections(3, 16, 8, 4, 6, 4)
	kPath, vPath, err := Write(dir, defaultName, want)
	if err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		path string
		s    Side
	}{{kPath, K}, {vPath, V}} {
		out, err := exec.Command(py, "testdata/readckpt.py", side.path).CombinedOutput()
		if err != nil {
			t.Fatalf("python reader on %s: %v\n%s", side.path, err, out)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<24)
		n := 0
		for sc.Scan() {
			var rec struct {
				Layer int
				Which string
				Shape []int
				Hex   string
			}
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("python output %q: %v", sc.Text(), err)
			}
			l := want.Layers[rec.Layer]
			var data []float32
			var shape []int
			switch {
			case side.s == K && rec.Which == "A":
				data, shape = l.Ak, []int{l.KRank, want.Hidden}
			case side.s == K && rec.Which == "B":
				data, shape = l.Bk, []int{want.KVDim, l.KRank}
			case side.s == V && rec.Which == "A":
				data, shape = l.Av, []int{l.VRank, want.Hidden}
			default:
				data, shape = l.Bv, []int{want.KVDim, l.VRank}
			}
			raw, _ := hex.DecodeString(rec.Hex)
			got := make([]float32, len(raw)/4)
			for i := range got {
				got[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
			if rec.Shape[0] != shape[0] || rec.Shape[1] != shape[1] || !bitsEqual(got, data) {
				t.Fatalf("%s layer %d %s: python sees shape %v (want %v) or different values", side.path, rec.Layer, rec.Which, rec.Shape, shape)
			}
			n++
		}
		if n != 2*len(want.Layers) {
			t.Fatalf("python reader returned %d tensors, want %d", n, 2*len(want.Layers))
		}
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct {
		n    Name
		s    Side
		want string
	}{
		{defaultName, K, "density_k_0.25_v_0.75_quant_k_16_v_16__k.ckpt"},
		{Name{KDensity: 0.5, VDensity: 1, KBits: 4, VBits: 4, ASVD: true, UseWindow: true, Window: 32}, V,
			"density_k_0.5_v_1.0_quant_k_4_v_4_asvd_window_32__v.ckpt"},
		{Name{KDensity: 0.125, VDensity: 0.5, KBits: 16, VBits: 16, UseWindow: true, Window: 32}, K,
			"density_k_0.125_v_0.5_quant_k_16_v_16_window_0__k.ckpt"}, // the reference prints 0 without quantisation
		{Name{KDensity: 1e-05, VDensity: 0.3, KBits: 2, VBits: 8}, K, "density_k_1e-05_v_0.3_quant_k_2_v_8__k.ckpt"},
	} {
		if got := c.n.File(c.s); got != c.want {
			t.Errorf("%+v side %c: %s, want %s", c.n, c.s, got, c.want)
			continue
		}
		back, s, ok := ParseName(filepath.Join("some", "dir", c.want))
		if !ok || s != c.s || back.KDensity != c.n.KDensity || back.VDensity != c.n.VDensity || back.KBits != c.n.KBits ||
			back.VBits != c.n.VBits || back.ASVD != c.n.ASVD || back.UseWindow != c.n.UseWindow {
			t.Errorf("ParseName(%s) = %+v %c %v", c.want, back, s, ok)
		}
	}
	k, v, err := Pair("/x/density_k_0.25_v_0.75_quant_k_16_v_16__v.ckpt")
	if err != nil || k != "/x/density_k_0.25_v_0.75_quant_k_16_v_16__k.ckpt" || v != "/x/density_k_0.25_v_0.75_quant_k_16_v_16__v.ckpt" {
		t.Fatalf("Pair: %s %s %v", k, v, err)
	}
	if _, _, err := Pair("/x/factors.ckpt"); err == nil || !strings.Contains(err.Error(), "factors.ckpt") {
		t.Fatalf("Pair of an unnamed file: %v", err)
	}
}

// stateDictFile builds, by hand, a file in the form torch.save gives
// [(lin_a.state_dict(), lin_b.state_dict())]: OrderedDicts carrying a
// _metadata attribute (set by BUILD), here with a half-precision A and a
// transposed (non-contiguous) float32 B, memo opcodes as Python writes them.
func stateDictFile(t *testing.T) string {
	t.Helper()
	var p pickler
	p.proto()
	p.op(opEmptyList)
	p.b.Write([]byte{'q', 0}) // BINPUT 0
	p.op(opMark)
	stateDict := func(tensor func()) {
		p.global("collections", "OrderedDict")
		p.op(opEmptyTuple)
		p.op(opReduce)
		p.op(opMark)
		p.str("weight")
		tensor()
		p.op('u') // SETITEMS
		// BUILD with {'_metadata': OrderedDict()}
		p.op(opEmptyDict)
		p.str("_metadata")
		p.global("collections", "OrderedDict")
		p.op(opEmptyTuple)
		p.op(opReduce)
		p.op(opSetItem)
		p.op(opBuild)
	}
	// A: (2, 3) half, contiguous.
	stateDict(func() { p.tensor("HalfStorage", "0", 2, 3) })
	// B: (4, 2) viewing a (2, 4) float32 storage transposed: strides (1, 4).
	stateDict(func() {
		p.global("torch._utils", "_rebuild_tensor_v2")
		p.op(opMark)
		p.op(opMark)
		p.str("storage")
		p.global("torch", "FloatStorage")
		p.str("1")
		p.str("cuda:0")
		p.int(8)
		p.op(opTuple)
		p.op(opBinPersID)
		p.int(0)
		p.intTuple2(4, 2)
		p.intTuple2(1, 4)
		p.op(opNewFalse)
		p.global("collections", "OrderedDict")
		p.op(opEmptyTuple)
		p.op(opReduce)
		p.op(opTuple)
		p.op(opReduce)
	})
	p.op(opTuple2)
	p.op(opAppends)
	p.op(opStop)
	half := []uint16{0x3c00, 0x3800, 0xbd00, 0x4000, 0x0000, 0xc400} // 1, 0.5, -1.25, 2, 0, -4
	var hb []byte
	for _, h := range half {
		hb = binary.LittleEndian.AppendUint16(hb, h)
	}
	bStorage := []float32{1, 2, 3, 4, 5, 6, 7, 8} // (2, 4) row-major
	var buf bytes.Buffer
	err := writeArchive(&buf, "archive", []record{
		bytesRecord("data.pkl", p.b.Bytes()),
		bytesRecord("byteorder", []byte("little")),
		bytesRecord("data/0", hb),
		float32Record("data/1", bStorage),
		bytesRecord("version", []byte("3\n")),
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sd.ckpt")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadStateDictForm(t *testing.T) {
	path := stateDictFile(t)
	fs, err := readSide(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 {
		t.Fatalf("%d layers", len(fs))
	}
	a, b := fs[0].a, fs[0].b
	if a.rows != 2 || a.cols != 3 || !bitsEqual(a.data, []float32{1, 0.5, -1.25, 2, 0, -4}) {
		t.Fatalf("A %v %v", a.shape(), a.data)
	}
	// Transpose of [[1 2 3 4] [5 6 7 8]].
	if b.rows != 4 || b.cols != 2 || !bitsEqual(b.data, []float32{1, 5, 2, 6, 3, 7, 4, 8}) {
		t.Fatalf("B %v %v", b.shape(), b.data)
	}
}

// rawArchive writes an archive holding the given pickle and storages.
func rawArchive(t *testing.T, pkl []byte, storages ...[]float32) string {
	t.Helper()
	recs := []record{bytesRecord("data.pkl", pkl), bytesRecord("byteorder", []byte("little"))}
	for i, s := range storages {
		recs = append(recs, float32Record("data/"+string(rune('0'+i)), s))
	}
	recs = append(recs, bytesRecord("version", []byte("3\n")))
	var buf bytes.Buffer
	if err := writeArchive(&buf, "archive", recs); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "x.ckpt")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	good := randomProjections(2, 8, 4, 2, 3, 5)
	kPath, vPath, err := Write(dir, defaultName, good)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(kPath)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	threeLayers := randomProjections(3, 8, 4, 2, 3, 6)
	other := t.TempDir()
	k3, _, err := Write(other, defaultName, threeLayers)
	if err != nil {
		t.Fatal(err)
	}
	wideHidden := randomProjections(2, 9, 4, 2, 3, 7)
	_, vWide, err := Write(t.TempDir(), defaultName, wideHidden)
	if err != nil {
		t.Fatal(err)
	}

	// A pickle that would call os.system under an unrestricted loader.
	var evil pickler
	evil.proto()
	evil.global("os", "system")
	evil.str("true")
	evil.op(opTuple1)
	evil.op(opReduce)
	evil.op(opStop)

	// A list with one dict that has a bias next to the weight.
	var bias pickler
	bias.proto()
	bias.op(opEmptyList)
	bias.op(opMark)
	for range 2 {
		bias.op(opEmptyDict)
		bias.str("weight")
		bias.tensor("FloatStorage", "0", 2, 2)
		bias.op(opSetItem)
		bias.str("bias")
		bias.tensor("FloatStorage", "0", 1, 2)
		bias.op(opSetItem)
	}
	bias.op(opTuple2)
	bias.op(opAppends)
	bias.op(opStop)

	// A storage record shorter than its element count.
	var short pickler
	short.proto()
	short.op(opEmptyList)
	short.op(opMark)
	for range 2 {
		short.op(opEmptyDict)
		short.str("weight")
		short.tensor("FloatStorage", "0", 2, 2)
		short.op(opSetItem)
	}
	short.op(opTuple2)
	short.op(opAppends)
	short.op(opStop)

	// A NaN in a factor.
	var nan pickler
	nan.proto()
	nan.op(opEmptyList)
	nan.op(opMark)
	for range 2 {
		nan.op(opEmptyDict)
		nan.str("weight")
		nan.tensor("FloatStorage", "0", 2, 2)
		nan.op(opSetItem)
	}
	nan.op(opTuple2)
	nan.op(opAppends)
	nan.op(opStop)

	for _, c := range []struct {
		name, k, v, want string
	}{
		{"not zip", write("a__k.ckpt", []byte("\x80\x02]q\x00.")), vPath, "not a PyTorch zip archive"},
		{"empty", write("e__k.ckpt", nil), vPath, "not a PyTorch zip archive"},
		{"truncated", write("t__k.ckpt", raw[:len(raw)/2]), vPath, "zip archive"},
		{"layer count", k3, vPath, "has 3 layers"},
		{"hidden", kPath, vWide, "hidden 8"},
		{"global", rawArchive(t, evil.b.Bytes()), vPath, "global os.system is not allowed"},
		{"bias", rawArchive(t, bias.b.Bytes(), []float32{1, 2, 3, 4}), vPath, "only 'weight'"},
		{"short storage", rawArchive(t, short.b.Bytes(), []float32{1, 2, 3}), vPath, "holds 12 bytes; 4 elements need 16"},
		{"nan", rawArchive(t, nan.b.Bytes(), []float32{1, float32(math.NaN()), 3, 4}), vPath, "non-finite"},
		{"missing", filepath.Join(dir, "nope__k.ckpt"), vPath, "no such file"},
	} {
		_, err := Read(c.k, c.v)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
		if err != nil && c.name == "nan" && !errors.Is(err, checkpoints.ErrNonFinite) {
			t.Errorf("nan: %v does not wrap ErrNonFinite", err)
		}
	}
}

func TestWriteRejects(t *testing.T) {
	p := randomProjections(1, 8, 4, 2, 3, 8)
	p.Layers[0].Bv = p.Layers[0].Bv[:5]
	if _, _, err := Write(t.TempDir(), defaultName, p); err == nil || !strings.Contains(err.Error(), "layer 0: v_proj_b") {
		t.Fatalf("short Bv: %v", err)
	}
	p = randomProjections(1, 8, 4, 2, 3, 8)
	p.Layers[0].Ak[3] = float32(math.Inf(1))
	dir := t.TempDir()
	if _, _, err := Write(dir, defaultName, p); !errors.Is(err, checkpoints.ErrNonFinite) {
		t.Fatalf("Inf: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files left after a refused write: %v", entries)
	}
}

// failingWriter fails after n bytes, like a full disk.
type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errors.New("no space left on device")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriteSideReportsWriterError(t *testing.T) {
	err := WriteSide(&failingWriter{n: 100}, "x", randomProjections(2, 64, 32, 8, 8, 9), K)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("error %v", err)
	}
}
