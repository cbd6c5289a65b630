package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/model/dtype"
)

// ---------------------------------------------------------------------------
// Real files: shared/models/stories260K.gguf (v1) and stories260K-v3.gguf (v3).

func openReal(t *testing.T, rel string) *File {
	t.Helper()
	f, err := Open(testassets.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func wantUint(t *testing.T, f *File, key string, want uint64) {
	t.Helper()
	got, ok := f.Uint(key)
	if !ok || got != want {
		t.Errorf("%s = %d (present %v), want %d", key, got, ok, want)
	}
}

func wantString(t *testing.T, f *File, key, want string) {
	t.Helper()
	got, ok := f.String(key)
	if !ok || got != want {
		t.Errorf("%s = %q (present %v), want %q", key, got, ok, want)
	}
}

// checkCommonMetadata checks the values PROVENANCE.md lists for both files.
func checkCommonMetadata(t *testing.T, f *File) {
	t.Helper()
	wantString(t, f, "general.architecture", "llama")
	wantString(t, f, "tokenizer.ggml.model", "llama")
	wantUint(t, f, "llama.embedding_length", 64)
	wantUint(t, f, "llama.block_count", 5)
	wantUint(t, f, "llama.feed_forward_length", 172)
	wantUint(t, f, "llama.rope.dimension_count", 8)
	wantUint(t, f, "llama.attention.head_count", 8)
	wantUint(t, f, "llama.attention.head_count_kv", 4)
	wantUint(t, f, "tokenizer.ggml.bos_token_id", 1)
	wantUint(t, f, "tokenizer.ggml.eos_token_id", 2)
	if _, ok := f.Get("llama.rope.freq_base"); ok {
		t.Error("llama.rope.freq_base present; PROVENANCE says it is not stored")
	}
	if eps, ok := f.Float("llama.attention.layer_norm_rms_epsilon"); !ok || eps != 9.999999747378752e-06 {
		t.Errorf("rms eps = %v (present %v), want f32 1e-5 = 9.999999747378752e-06", eps, ok)
	}
	for _, kv := range f.KV {
		want := TypeUint32
		switch {
		case strings.HasSuffix(kv.Key, "layer_norm_rms_epsilon"):
			want = TypeFloat32
		case kv.Key == "tokenizer.ggml.tokens" || kv.Key == "tokenizer.ggml.scores" || kv.Key == "tokenizer.ggml.token_type":
			want = TypeArray
		case kv.Key == "general.architecture" || kv.Key == "general.name" || kv.Key == "tokenizer.ggml.model" || kv.Key == "llama.tensor_data_layout":
			want = TypeString
		}
		if kv.Type != want {
			t.Errorf("%s: type %v, want %v", kv.Key, kv.Type, want)
		}
	}

	toks, ok := f.Strings("tokenizer.ggml.tokens")
	if !ok || len(toks) != 512 {
		t.Fatalf("tokens: %d (present %v), want 512", len(toks), ok)
	}
	for i, w := range map[int]string{0: "<unk>", 1: "<s>", 2: "</s>", 3: "<0x00>", 4: "<0x01>", 258: "<0xFF>"} {
		if toks[i] != w {
			t.Errorf("token %d = %q, want %q", i, toks[i], w)
		}
	}
	scores, ok := f.Float32s("tokenizer.ggml.scores")
	if !ok || len(scores) != 512 {
		t.Fatalf("scores: %d (present %v), want 512", len(scores), ok)
	}
	for id := 259; id < 512; id++ {
		if scores[id] != float32(-(id - 259)) {
			t.Fatalf("score[%d] = %v, want %d", id, scores[id], -(id - 259))
		}
	}
	for id := 0; id < 259; id++ {
		if scores[id] != 0 {
			t.Fatalf("score[%d] = %v, want 0", id, scores[id])
		}
	}
	types, ok := f.Int32s("tokenizer.ggml.token_type")
	if !ok || len(types) != 512 {
		t.Fatalf("token_type: %d (present %v), want 512", len(types), ok)
	}
	count := map[int32]int{}
	for _, ty := range types {
		count[ty]++
	}
	if want := map[int32]int{6: 256, 1: 253, 3: 2, 2: 1}; !reflect.DeepEqual(count, want) {
		t.Errorf("token_type counts %v, want %v", count, want)
	}
	if types[0] != 2 || types[1] != 3 || types[2] != 3 || types[3] != 6 {
		t.Errorf("token_type[0:4] = %v, want [2 3 3 6]", types[:4])
	}
}

func TestOpenV1(t *testing.T) {
	f := openReal(t, "models/stories260K.gguf")
	if f.Version != 1 || len(f.Tensors) != 48 || len(f.KV) != 18 {
		t.Fatalf("version %d, %d tensors, %d kv; want 1, 48, 18", f.Version, len(f.Tensors), len(f.KV))
	}
	if f.DataOffset != 11456 || f.Alignment != 32 || f.Size != 1182656 {
		t.Errorf("data offset %d, alignment %d, size %d; want 11456, 32, 1182656", f.DataOffset, f.Alignment, f.Size)
	}
	if f.KV[0].Key != "general.architecture" || f.KV[17].Key != "tokenizer.ggml.padding_token_id" {
		t.Errorf("key order: first %q, last %q", f.KV[0].Key, f.KV[17].Key)
	}
	checkCommonMetadata(t, f)
	wantString(t, f, "general.name", "tinyllamas-stories-260k")
	wantString(t, f, "llama.tensor_data_layout", "Meta AI original pth")
	wantUint(t, f, "llama.context_length", 512)
	wantUint(t, f, "tokenizer.ggml.padding_token_id", 0)
	if _, ok := f.Get("tokenizer.ggml.unknown_token_id"); ok {
		t.Error("v1 file has unknown_token_id; PROVENANCE says absent")
	}
	for i, want := range stories260KTensors {
		ti := f.Tensors[i]
		if ti.Name != want.name || !reflect.DeepEqual(ti.Dims, want.dims) || ti.Offset != want.off ||
			ti.Bytes() != int64(want.bytes) || ti.Type != F32 {
			t.Errorf("tensor %d = %+v (%d bytes), want %s %v off=%d bytes=%d F32", i, ti, ti.Bytes(), want.name, want.dims, want.off, want.bytes)
		}
	}
	last := f.Tensors[47]
	if end := f.DataOffset + int64(last.Offset) + last.Bytes(); end != f.Size {
		t.Errorf("data end %d, want file size %d", end, f.Size)
	}
}

func TestOpenV3(t *testing.T) {
	f := openReal(t, "models/stories260K-v3.gguf")
	if f.Version != 3 || len(f.Tensors) != 48 || len(f.KV) != 19 {
		t.Fatalf("version %d, %d tensors, %d kv; want 3, 48, 19", f.Version, len(f.Tensors), len(f.KV))
	}
	if f.DataOffset != 14176 || f.Alignment != 32 || f.Size != 1185376 {
		t.Errorf("data offset %d, alignment %d, size %d; want 14176, 32, 1185376", f.DataOffset, f.Alignment, f.Size)
	}
	if f.KV[0].Key != "tokenizer.ggml.tokens" || f.Tensors[1].Name != "output_norm.weight" {
		t.Errorf("order: first key %q, second tensor %q", f.KV[0].Key, f.Tensors[1].Name)
	}
	checkCommonMetadata(t, f)
	wantString(t, f, "general.name", "llama")
	wantUint(t, f, "llama.context_length", 2048)
	wantUint(t, f, "tokenizer.ggml.padding_token_id", 0xFFFFFFFF)
	wantUint(t, f, "tokenizer.ggml.seperator_token_id", 0xFFFFFFFF)
	wantUint(t, f, "tokenizer.ggml.unknown_token_id", 0)
	if _, ok := f.Get("llama.tensor_data_layout"); ok {
		t.Error("v3 file has llama.tensor_data_layout; PROVENANCE says absent")
	}
	for _, ti := range f.Tensors {
		if off, ok := stories260KV3Offsets[ti.Name]; !ok || off != ti.Offset {
			t.Errorf("%s: offset %d, want %d (listed %v)", ti.Name, ti.Offset, off, ok)
		}
	}
	for _, want := range stories260KTensors {
		ti, ok := f.Tensor(want.name)
		if !ok || !reflect.DeepEqual(ti.Dims, want.dims) || ti.Type != F32 {
			t.Errorf("%s: %+v (present %v), want dims %v F32", want.name, ti, ok, want.dims)
		}
	}
}

// TestRealTensorsIdentical: every tensor is byte-identical by name across the
// two files, and the tied output matrix equals the embedding.
func TestRealTensorsIdentical(t *testing.T) {
	f1 := openReal(t, "models/stories260K.gguf")
	f3 := openReal(t, "models/stories260K-v3.gguf")
	for _, ti := range f1.Tensors {
		b1, err := f1.TensorBytes(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		b3, err := f3.TensorBytes(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b1)) != ti.Bytes() || !bytes.Equal(b1, b3) {
			t.Errorf("%s: v1 and v3 bytes differ (%d vs %d bytes)", ti.Name, len(b1), len(b3))
		}
	}
	emb, _ := f1.TensorBytes("token_embd.weight")
	out, _ := f1.TensorBytes("output.weight")
	if !bytes.Equal(emb, out) {
		t.Error("output.weight differs from token_embd.weight")
	}
}

func stats(x []float32) (mean, rms, lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	var s, s2 float64
	for _, v := range x {
		f := float64(v)
		s += f
		s2 += f * f
		lo = math.Min(lo, f)
		hi = math.Max(hi, f)
	}
	n := float64(len(x))
	return s / n, math.Sqrt(s2 / n), lo, hi
}

// TestRealTensorStats decodes every tensor of both files and compares its
// statistics with the independent listing in PROVENANCE.md (4 decimals).
func TestRealTensorStats(t *testing.T) {
	const tol = 1e-4
	for _, rel := range []string{"models/stories260K.gguf", "models/stories260K-v3.gguf"} {
		f := openReal(t, rel)
		for _, want := range stories260KTensors {
			data, shape, err := f.ReadTensor(want.name)
			if err != nil {
				t.Fatal(err)
			}
			wantShape := make([]int, len(want.dims))
			for i, d := range want.dims {
				wantShape[len(want.dims)-1-i] = int(d)
			}
			if !reflect.DeepEqual(shape, wantShape) || len(data) != int(want.bytes/4) {
				t.Fatalf("%s %s: shape %v, %d values; want %v, %d", rel, want.name, shape, len(data), wantShape, want.bytes/4)
			}
			m, r, lo, hi := stats(data)
			if math.Abs(m-want.mean) > tol || math.Abs(r-want.rms) > tol || math.Abs(lo-want.min) > tol || math.Abs(hi-want.max) > tol {
				t.Errorf("%s %s: mean %.5f rms %.5f min %.5f max %.5f; want %.4f %.4f %.4f %.4f",
					rel, want.name, m, r, lo, hi, want.mean, want.rms, want.min, want.max)
			}
		}
	}
}

// TestAttnKShape: blk.0.attn_k.weight is ggml [64, 32], i.e. 32 rows of 64.
func TestAttnKShape(t *testing.T) {
	f := openReal(t, "models/stories260K.gguf")
	ti, ok := f.Tensor("blk.0.attn_k.weight")
	if !ok {
		t.Fatal("blk.0.attn_k.weight missing")
	}
	if !reflect.DeepEqual(ti.Dims, []uint64{64, 32}) || !reflect.DeepEqual(ti.Shape(), []int{32, 64}) || ti.NumElements() != 2048 {
		t.Fatalf("dims %v shape %v n %d", ti.Dims, ti.Shape(), ti.NumElements())
	}
	data, shape, err := f.ReadTensor("blk.0.attn_k.weight")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(shape, []int{32, 64}) {
		t.Fatalf("shape %v, want [32 64]", shape)
	}
	m, r, lo, hi := stats(data)
	for _, c := range []struct{ got, want float64 }{{m, -0.0081}, {r, 0.2263}, {lo, -1.0818}, {hi, 0.9959}} {
		if math.Abs(c.got-c.want) > 1e-4 {
			t.Errorf("stats mean/rms/min/max = %.5f %.5f %.5f %.5f, want -0.0081 0.2263 -1.0818 0.9959", m, r, lo, hi)
			break
		}
	}
	// Row-major: element (row i, col j) is raw float i*64+j.
	raw, _ := f.TensorBytes("blk.0.attn_k.weight")
	if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(5*64+7):])); got != data[5*64+7] {
		t.Errorf("element (5,7) = %v, raw %v", data[5*64+7], got)
	}
}

// TestRewriteRealIsByteIdentical re-encodes both real files from what the
// reader returns; Write must reproduce them byte for byte, which checks the
// writer against the converters that made them.
func TestRewriteRealIsByteIdentical(t *testing.T) {
	for _, rel := range []string{"models/stories260K.gguf", "models/stories260K-v3.gguf"} {
		path := testassets.Path(t, rel)
		f := openReal(t, rel)
		var ts []WriteTensor
		for _, ti := range f.Tensors {
			data, shape, err := f.ReadTensor(ti.Name)
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, WriteTensor{Name: ti.Name, Shape: shape, Type: ti.Type, Data: data})
		}
		out := filepath.Join(t.TempDir(), "re.gguf")
		if err := Write(out, f.Version, f.KV, ts); err != nil {
			t.Fatal(err)
		}
		want, _ := os.ReadFile(path)
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, want) {
			n := 0
			for n < min(len(got), len(want)) && got[n] == want[n] {
				n++
			}
			t.Errorf("%s: rewrite differs (%d vs %d bytes, first difference at byte %d)", rel, len(got), len(want), n)
		}
	}
}

// ---------------------------------------------------------------------------
// Write → read round trips.

func allKinds() []KeyValue {
	return []KeyValue{
		KV("u8", uint8(255)),
		KV("i8", int8(-128)),
		KV("u16", uint16(65535)),
		KV("i16", int16(-32768)),
		KV("u32", uint32(0xFFFFFFFF)),
		KV("i32", int32(math.MinInt32)),
		KV("f32", float32(-1.5e-7)),
		KV("bool.t", true),
		KV("bool.f", false),
		KV("str", "héllo ✓"),
		KV("str.empty", ""),
		KV("u64", uint64(math.MaxUint64)),
		KV("i64", int64(math.MinInt64)),
		KV("f64", math.Pi),
		KV("a.u8", []uint8{0, 1, 255}),
		KV("a.i8", []int8{-1, 2}),
		KV("a.u16", []uint16{7, 65535}),
		KV("a.i16", []int16{-300}),
		KV("a.u32", []uint32{1, 0xFFFFFFFF}),
		KV("a.i32", []int32{-5, 6, 7}),
		KV("a.f32", []float32{0.25, -3}),
		KV("a.bool", []bool{true, false, true}),
		KV("a.str", []string{"a", "", "ccc"}),
		KV("a.u64", []uint64{1 << 40}),
		KV("a.i64", []int64{-1 << 40}),
		KV("a.f64", []float64{1e300, -2}),
		KV("a.empty", []float32{}),
		KV("a.nested", []any{[]int32{1, 2}, []string{"x"}, []any{[]uint8{9}, []any{}}, []bool{}}),
	}
}

func ramp(n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = scale * float32(math.Sin(float64(i)*0.37+0.1))
	}
	return x
}

func TestRoundTrip(t *testing.T) {
	for _, version := range []uint32{1, 2, 3} {
		kv := allKinds()
		ts := []WriteTensor{
			{Name: "f32.2d", Shape: []int{3, 5}, Type: F32, Data: ramp(15, 2)},
			{Name: "f16.1d", Shape: []int{7}, Type: F16, Data: ramp(7, 3)},
			{Name: "bf16.4d", Shape: []int{2, 3, 1, 2}, Type: BF16, Data: ramp(12, 5)},
			{Name: "q8.2d", Shape: []int{2, 64}, Type: Q8_0, Data: ramp(128, 1.7)},
		}
		path := filepath.Join(t.TempDir(), "rt.gguf")
		if err := Write(path, version, kv, ts); err != nil {
			t.Fatalf("v%d: %v", version, err)
		}
		f, err := Open(path)
		if err != nil {
			t.Fatalf("v%d: %v", version, err)
		}
		defer f.Close()
		if f.Version != version || !reflect.DeepEqual(f.KV, kv) {
			t.Errorf("v%d: metadata differs:\n got %#v\nwant %#v", version, f.KV, kv)
		}
		if f.DataOffset%32 != 0 {
			t.Errorf("v%d: data offset %d not aligned", version, f.DataOffset)
		}
		for _, w := range ts {
			data, shape, err := f.ReadTensor(w.Name)
			if err != nil {
				t.Fatalf("v%d: %v", version, err)
			}
			if !reflect.DeepEqual(shape, w.Shape) || len(data) != len(w.Data) {
				t.Fatalf("v%d %s: shape %v, want %v", version, w.Name, shape, w.Shape)
			}
			for i, x := range w.Data {
				var want float32
				tol := float32(0)
				switch w.Type {
				case F32:
					want = x
				case F16:
					want = dtype.RoundF16(x)
				case BF16:
					want = dtype.BF16ToF32(dtype.F32ToBF16(x))
				case Q8_0:
					// |x − d̂·q| ≤ d/2 + 127·|d − d̂| ≤ d·(0.5 + 127·2⁻¹¹), d = amax/127.
					var amax float32
					for _, v := range w.Data[i/32*32 : i/32*32+32] {
						amax = max(amax, float32(math.Abs(float64(v))))
					}
					want, tol = x, 0.57*amax/127
				}
				if d := float32(math.Abs(float64(data[i] - want))); d > tol {
					t.Fatalf("v%d %s[%d] = %v, want %v ± %v", version, w.Name, i, data[i], want, tol)
				}
			}
		}
	}
}

// TestWriteV1UsesUint32 checks the v1/v3 layout difference on the first
// fields: tensor and KV counts are 4 bytes in v1 and 8 bytes in v3.
func TestWriteV1UsesUint32(t *testing.T) {
	dir := t.TempDir()
	kv := []KeyValue{KV("k", "v")}
	for _, c := range []struct {
		version uint32
		head    []byte
	}{
		{1, []byte("GGUF\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00k\x08\x00\x00\x00\x01\x00\x00\x00v")},
		{3, []byte("GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00k\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00v")},
	} {
		p := filepath.Join(dir, "h.gguf")
		if err := Write(p, c.version, kv, nil); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if !bytes.HasPrefix(b, c.head) || len(b)%32 != 0 {
			t.Errorf("v%d: header % x, want prefix % x and padding to 32", c.version, b, c.head)
		}
	}
}

func TestWriteAlignment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.gguf")
	kv := []KeyValue{KV(KeyAlignment, uint32(64))}
	ts := []WriteTensor{
		{Name: "a", Shape: []int{3}, Type: F32, Data: []float32{1, 2, 3}},
		{Name: "b", Shape: []int{5}, Type: F16, Data: []float32{1, 2, 3, 4, 5}},
	}
	if err := Write(path, 2, kv, ts); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Alignment != 64 || f.DataOffset%64 != 0 || f.Tensors[1].Offset != 64 {
		t.Errorf("alignment %d, data offset %d, second offset %d; want 64, k·64, 64", f.Alignment, f.DataOffset, f.Tensors[1].Offset)
	}
	data, _, err := f.ReadTensor("b")
	if err != nil || !reflect.DeepEqual(data, []float32{1, 2, 3, 4, 5}) {
		t.Errorf("b = %v, %v", data, err)
	}
}

func TestAccessors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "acc.gguf")
	if err := Write(path, 3, allKinds(), nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v, ok := f.Uint("u8"); !ok || v != 255 {
		t.Errorf("Uint(u8) = %v %v", v, ok)
	}
	if v, ok := f.Uint("u64"); !ok || v != math.MaxUint64 {
		t.Errorf("Uint(u64) = %v %v", v, ok)
	}
	for _, k := range []string{"i8", "i32", "i64", "f32", "str", "missing"} {
		if v, ok := f.Uint(k); ok {
			t.Errorf("Uint(%s) = %v, want rejection", k, v)
		}
	}
	if v, ok := f.Float("f32"); !ok || v != float64(float32(-1.5e-7)) {
		t.Errorf("Float(f32) = %v %v", v, ok)
	}
	if v, ok := f.Float("i16"); !ok || v != -32768 {
		t.Errorf("Float(i16) = %v %v", v, ok)
	}
	if v, ok := f.Float("u64"); !ok || v != math.MaxUint64 {
		t.Errorf("Float(u64) = %v %v", v, ok)
	}
	if _, ok := f.Float("str"); ok {
		t.Error("Float(str) accepted")
	}
	if v, ok := f.String("str"); !ok || v != "héllo ✓" {
		t.Errorf("String = %q %v", v, ok)
	}
	if _, ok := f.String("u8"); ok {
		t.Error("String(u8) accepted")
	}
	if v, ok := f.Int32s("a.u16"); !ok || !reflect.DeepEqual(v, []int32{7, 65535}) {
		t.Errorf("Int32s(a.u16) = %v %v", v, ok)
	}
	if v, ok := f.Int32s("a.i8"); !ok || !reflect.DeepEqual(v, []int32{-1, 2}) {
		t.Errorf("Int32s(a.i8) = %v %v", v, ok)
	}
	for _, k := range []string{"a.u32", "a.u64", "a.i64", "a.f32"} { // out of range or not integers
		if v, ok := f.Int32s(k); ok {
			t.Errorf("Int32s(%s) = %v, want rejection", k, v)
		}
	}
	if v, ok := f.Float32s("a.f64"); !ok || !reflect.DeepEqual(v, []float32{float32(math.Inf(1)), -2}) {
		t.Errorf("Float32s(a.f64) = %v %v", v, ok)
	}
	v, _ := f.Strings("a.str")
	v[0] = "changed"
	if w, _ := f.Strings("a.str"); w[0] != "a" {
		t.Error("Strings returned shared storage")
	}
}

// ---------------------------------------------------------------------------
// Decoding against hand-computed values.

func TestDecodeF16(t *testing.T) {
	raw := []byte{0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00, 0x55, 0x35, 0x00, 0x80}
	want := []float32{1, -2, 65504, 1.0 / (1 << 24), 0.333251953125, float32(math.Copysign(0, -1))}
	got, err := Decode(F16, raw, 6)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Errorf("F16 %d: %v, want %v", i, got[i], want[i])
		}
	}
	// Through a file: Write encodes, TensorBytes shows the exact bits.
	path := filepath.Join(t.TempDir(), "f16.gguf")
	if err := Write(path, 3, nil, []WriteTensor{{Name: "h", Shape: []int{2, 3}, Type: F16, Data: want}}); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, _ := f.TensorBytes("h"); !bytes.Equal(b, raw) {
		t.Errorf("written F16 bytes % x, want % x", b, raw)
	}
}

func TestDecodeBF16(t *testing.T) {
	raw := []byte{0x80, 0x3F, 0x40, 0xC0, 0x49, 0x40, 0x80, 0x7F}
	want := []float32{1, -3, 3.140625, float32(math.Inf(1))}
	got, err := Decode(BF16, raw, 4)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("BF16 = %v %v, want %v", got, err, want)
	}
}

// q8Block builds one Q8_0 block: fp16 scale bits, then 32 int8 quants.
func q8Block(scale uint16, q func(j int) int8) []byte {
	b := binary.LittleEndian.AppendUint16(nil, scale)
	for j := range 32 {
		b = append(b, byte(q(j)))
	}
	return b
}

func TestDecodeQ8_0(t *testing.T) {
	// Block 0: scale 0x3800 = 0.5, q_j = j − 16 → 0.5·(j − 16).
	// Block 1: scale 0xBC00 = −1, q_j = −128 for even j, 127 for odd j.
	data := append(q8Block(0x3800, func(j int) int8 { return int8(j - 16) }),
		q8Block(0xBC00, func(j int) int8 {
			if j%2 == 0 {
				return -128
			}
			return 127
		})...)
	want := make([]float32, 64)
	for j := range 32 {
		want[j] = 0.5 * float32(j-16)
		want[32+j] = 128
		if j%2 == 1 {
			want[32+j] = -127
		}
	}
	// A hand-built v3 file: one Q8_0 tensor of ggml dims [32, 2].
	img := newImage(3)
	img.header(1, 0)
	img.tensorInfo("q", []uint64{32, 2}, Q8_0, 0)
	img.padTo(32)
	img.b = append(img.b, data...)
	f, err := Parse(bytes.NewReader(img.b), int64(len(img.b)))
	if err != nil {
		t.Fatal(err)
	}
	got, shape, err := f.ReadTensor("q")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(shape, []int{2, 32}) || !reflect.DeepEqual(got, want) {
		t.Errorf("Q8_0: shape %v values %v\nwant [2 32] %v", shape, got, want)
	}
}

// ---------------------------------------------------------------------------
// Hand-built images for bad-input tests.

type image struct {
	b    []byte
	wide bool
}

func newImage(version uint32) *image {
	img := &image{wide: version >= 2}
	img.b = append(img.b, "GGUF"...)
	img.u32(version)
	return img
}

func (m *image) u32(v uint32) { m.b = binary.LittleEndian.AppendUint32(m.b, v) }
func (m *image) u64(v uint64) { m.b = binary.LittleEndian.AppendUint64(m.b, v) }
func (m *image) n(v uint64) {
	if m.wide {
		m.u64(v)
	} else {
		m.u32(uint32(v))
	}
}
func (m *image) str(s string)             { m.n(uint64(len(s))); m.b = append(m.b, s...) }
func (m *image) header(nTensors, nKV int) { m.n(uint64(nTensors)); m.n(uint64(nKV)) }
func (m *image) kvU32(k string, v uint32) { m.str(k); m.u32(uint32(TypeUint32)); m.u32(v) }
func (m *image) padTo(a int) {
	for len(m.b)%a != 0 {
		m.b = append(m.b, 0)
	}
}
func (m *image) tensorInfo(name string, dims []uint64, tt TensorType, off uint64) {
	m.str(name)
	m.u32(uint32(len(dims)))
	for _, d := range dims {
		m.n(d)
	}
	m.u32(uint32(tt))
	m.u64(off)
}

// withData pads to 32 and appends n zero bytes of tensor data.
func (m *image) withData(n int) []byte {
	m.padTo(32)
	return append(m.b, make([]byte, n)...)
}

func parseBytes(b []byte) (*File, error) { return Parse(bytes.NewReader(b), int64(len(b))) }

func TestBadInput(t *testing.T) {
	oneTensor := func(version uint32, dims []uint64, tt TensorType, off uint64, dataBytes int) []byte {
		m := newImage(version)
		m.header(1, 0)
		m.tensorInfo("w", dims, tt, off)
		return m.withData(dataBytes)
	}
	cases := []struct {
		name     string
		img      func() []byte
		sentinel error
		substr   string
	}{
		{"empty", func() []byte { return nil }, ErrFormat, "truncated"},
		{"bad magic", func() []byte { return []byte("GGML\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00") }, ErrFormat, "bad magic"},
		{"version 0", func() []byte { return newImage(0).b }, ErrUnsupported, "version 0"},
		{"version 4", func() []byte { m := newImage(4); m.header(0, 0); return m.b }, ErrUnsupported, "version 4"},
		{"big-endian", func() []byte { return []byte("GGUF\x00\x00\x00\x03") }, ErrUnsupported, "big-endian"},
		{"truncated counts", func() []byte { m := newImage(3); m.u64(0); return m.b }, ErrFormat, "truncated"},
		{"truncated kv value", func() []byte {
			m := newImage(3)
			m.header(0, 1)
			m.str("k")
			m.u32(uint32(TypeUint64))
			m.u32(7)
			return m.b
		}, ErrFormat, "truncated"},
		{"string length beyond file", func() []byte {
			m := newImage(3)
			m.header(0, 1)
			m.n(1 << 40)
			m.b = append(m.b, "key and some bytes"...)
			return m.b
		}, ErrFormat, "exceeds"},
		{"v1 string length beyond file", func() []byte {
			m := newImage(1)
			m.header(0, 1)
			m.str("k")
			m.u32(uint32(TypeString))
			m.u32(0xFFFFFFF0)
			m.b = append(m.b, "abcdefgh"...)
			return m.b
		}, ErrFormat, "exceeds"},
		{"array length beyond file", func() []byte {
			m := newImage(3)
			m.header(0, 1)
			m.str("k")
			m.u32(uint32(TypeArray))
			m.u32(uint32(TypeUint32))
			m.n(1 << 61)
			m.u32(1)
			return m.b
		}, ErrFormat, "array length"},
		{"string array length beyond file", func() []byte {
			m := newImage(1)
			m.header(0, 1)
			m.str("k")
			m.u32(uint32(TypeArray))
			m.u32(uint32(TypeString))
			m.n(1000) // at least 4000 bytes of lengths needed
			m.b = append(m.b, make([]byte, 100)...)
			return m.b
		}, ErrFormat, "array length"},
		{"absurd tensor count", func() []byte { m := newImage(3); m.header(1<<62, 0); return m.b }, ErrFormat, "tensor count"},
		{"absurd kv count", func() []byte { m := newImage(2); m.n(0); m.n(math.MaxUint64); return m.b }, ErrFormat, "metadata count"},
		{"counts fit alone but not together", func() []byte {
			m := newImage(3)
			m.header(3, 7) // 3·32 + 7·13 = 187 bytes needed
			m.b = append(m.b, make([]byte, 120)...)
			return m.b
		}, ErrFormat, "cannot fit"},
		{"unknown value type", func() []byte {
			m := newImage(3)
			m.header(0, 1)
			m.str("k")
			m.u32(13)
			m.u32(0)
			return m.b
		}, ErrFormat, "unknown value type 13"},
		{"unknown array element type", func() []byte {
			m := newImage(3)
			m.header(0, 1)
			m.str("k")
			m.u32(uint32(TypeArray))
			m.u32(99)
			m.n(0)
			return m.b
		}, ErrFormat, "unknown array element type 99"},
		{"arrays nested too deep", func() []byte {
			m := newImage(3)
			m.header(0, 1)
			m.str("k")
			m.u32(uint32(TypeArray))
			for range maxNesting + 1 {
				m.u32(uint32(TypeArray))
				m.n(1)
			}
			m.u32(uint32(TypeUint8))
			m.n(0)
			return m.b
		}, ErrFormat, "nested deeper"},
		{"duplicate key", func() []byte {
			m := newImage(3)
			m.header(0, 2)
			m.kvU32("a", 1)
			m.kvU32("a", 2)
			return m.b
		}, ErrFormat, `duplicate key "a"`},
		{"bad alignment", func() []byte {
			m := newImage(3)
			m.header(0, 1)
			m.kvU32(KeyAlignment, 48)
			return m.b
		}, ErrFormat, "alignment 48"},
		{"too many dims", func() []byte { return oneTensor(3, []uint64{1, 1, 1, 1, 1}, F32, 0, 4) }, ErrFormat, "5 dimensions"},
		{"no dims", func() []byte { return oneTensor(3, nil, F32, 0, 4) }, ErrFormat, "0 dimensions"},
		{"zero dim", func() []byte { return oneTensor(3, []uint64{4, 0}, F32, 0, 16) }, ErrFormat, "dimension 1 is 0"},
		{"overflowing dims", func() []byte { return oneTensor(3, []uint64{1 << 32, 1 << 32, 1 << 32}, F32, 0, 4) }, ErrFormat, "overflow"},
		{"overflowing bytes", func() []byte { return oneTensor(3, []uint64{1 << 30, 1 << 30, 2}, F32, 0, 4) }, ErrFormat, "overflow"},
		{"dims beyond int64", func() []byte { return oneTensor(3, []uint64{1 << 63}, F32, 0, 4) }, ErrFormat, "dimension 0"},
		{"block size mismatch", func() []byte { return oneTensor(3, []uint64{16, 2}, Q8_0, 0, 68) }, ErrFormat, "multiple of 32"},
		{"unknown tensor type", func() []byte { return oneTensor(3, []uint64{4}, 100, 0, 16) }, ErrUnsupported, "tensor type 100"},
		{"data beyond file", func() []byte { return oneTensor(3, []uint64{4, 4}, F32, 0, 63) }, ErrFormat, "beyond"},
		{"v1 data beyond file", func() []byte { return oneTensor(1, []uint64{4, 4}, F32, 32, 64) }, ErrFormat, "beyond"},
		{"offset beyond file", func() []byte { return oneTensor(3, []uint64{1}, F32, 1<<62, 64) }, ErrFormat, "beyond"},
		{"misaligned offset", func() []byte { return oneTensor(3, []uint64{1}, F32, 4, 64) }, ErrFormat, "not a multiple of the alignment"},
		{"duplicate tensor names", func() []byte {
			m := newImage(3)
			m.header(2, 0)
			m.tensorInfo("w", []uint64{1}, F32, 0)
			m.tensorInfo("w", []uint64{1}, F32, 32)
			return m.withData(64)
		}, ErrFormat, `duplicate tensor name "w"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseBytes(c.img())
			if err == nil {
				t.Fatal("parsed without error")
			}
			if !errors.Is(err, c.sentinel) || !strings.Contains(err.Error(), c.substr) {
				t.Errorf("error %q: want errors.Is %v and substring %q", err, c.sentinel, c.substr)
			}
		})
	}
}

// TestAbsurdCountsAllocateLittle: header counts must not drive allocations.
func TestAbsurdCountsAllocateLittle(t *testing.T) {
	m := newImage(3)
	m.header(1<<20, 1<<20) // each fits alone in no way; 8 MiB of infos claimed
	m.b = append(m.b, make([]byte, 64)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := parseBytes(m.b)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("err = %v, want ErrFormat", err)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 256<<10 {
		t.Errorf("parse allocated %d bytes for an %d-byte input", d, len(m.b))
	}
}

func TestReadTensorUnsupported(t *testing.T) {
	m := newImage(3)
	m.header(1, 0)
	m.tensorInfo("blk.0.q4", []uint64{32}, Q4_0, 0)
	f, err := parseBytes(m.withData(18))
	if err != nil {
		t.Fatal(err)
	}
	if ti, _ := f.Tensor("blk.0.q4"); ti.Bytes() != 18 {
		t.Errorf("Q4_0 bytes %d, want 18", ti.Bytes())
	}
	_, _, err = f.ReadTensor("blk.0.q4")
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `"blk.0.q4"`) || !strings.Contains(err.Error(), "Q4_0") {
		t.Errorf("err = %v, want ErrUnsupported naming tensor and Q4_0", err)
	}
	if _, _, err := f.ReadTensor("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing tensor: err = %v", err)
	}
}

func TestOpenErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.gguf")
	if _, err := Open(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.gguf")
	os.WriteFile(bad, []byte("not a gguf file at all"), 0o644)
	_, err := Open(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !errors.Is(err, ErrFormat) {
		t.Errorf("bad file: %v", err)
	}
}

func TestReadAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.gguf")
	if err := Write(path, 3, nil, []WriteTensor{{Name: "a", Shape: []int{1}, Type: F32, Data: []float32{1}}}); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.ReadTensor("a"); err == nil {
		t.Error("ReadTensor after Close succeeded")
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.gguf")
	good := []WriteTensor{{Name: "a", Shape: []int{2}, Type: F32, Data: []float32{1, 2}}}
	if err := Write(path, 3, []KeyValue{KV("k", uint32(1))}, good); err != nil {
		t.Fatal(err)
	}
	orig, _ := os.ReadFile(path)
	cases := []struct {
		name    string
		version uint32
		kv      []KeyValue
		ts      []WriteTensor
		substr  string
	}{
		{"version", 4, nil, good, "version 4"},
		{"type mismatch", 3, []KeyValue{{Key: "k", Type: TypeUint32, Value: int32(1)}}, good, "does not match"},
		{"unsupported go type", 3, []KeyValue{KV("k", 3)}, good, "unsupported Go type"},
		{"duplicate key", 3, []KeyValue{KV("k", true), KV("k", false)}, good, "duplicate metadata key"},
		{"bad alignment", 3, []KeyValue{KV(KeyAlignment, uint32(24))}, good, "alignment"},
		{"alignment not u32", 3, []KeyValue{KV(KeyAlignment, int32(64))}, good, "alignment"},
		{"nested non-array", 3, []KeyValue{KV("k", []any{int32(1)})}, good, "is not an array"},
		{"shape mismatch", 3, nil, []WriteTensor{{Name: "a", Shape: []int{3}, Type: F32, Data: []float32{1, 2}}}, "does not match 2 values"},
		{"zero dim", 3, nil, []WriteTensor{{Name: "a", Shape: []int{0}, Type: F32}}, "bad dimension"},
		{"too many dims", 3, nil, []WriteTensor{{Name: "a", Shape: []int{1, 1, 1, 1, 1}, Type: F32, Data: []float32{1}}}, "5 dimensions"},
		{"duplicate tensor", 3, nil, append(good, good...), "duplicate tensor name"},
		{"q8 block", 3, nil, []WriteTensor{{Name: "a", Shape: []int{16}, Type: Q8_0, Data: make([]float32, 16)}}, "multiple of 32"},
		{"q8 non-finite", 3, nil, []WriteTensor{{Name: "a", Shape: []int{32}, Type: Q8_0, Data: append(make([]float32, 31), float32(math.NaN()))}}, "non-finite"},
		{"unwritable type", 3, nil, []WriteTensor{{Name: "a", Shape: []int{32}, Type: Q4_0, Data: make([]float32, 32)}}, "Q4_0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Write(path, c.version, c.kv, c.ts)
			if err == nil || !strings.Contains(err.Error(), c.substr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want substring %q and the path", err, c.substr)
			}
			if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
				t.Error("failed Write changed the existing file")
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("failed Write left %d entries in the directory", len(ents))
			}
		})
	}
}
