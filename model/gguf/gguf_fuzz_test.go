package gguf

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime/metrics"
	"testing"

	"github.com/cskv/cskv/internal/testassets"
)

// fuzzSeed writes a small valid file with Write and returns its bytes.
func fuzzSeed(f *testing.F, version uint32) []byte {
	path := filepath.Join(f.TempDir(), "seed.gguf")
	kv := []KeyValue{
		KV("general.architecture", "llama"),
		KV("llama.block_count", uint32(1)),
		KV("eps", float32(1e-5)),
		KV("tokens", []string{"<unk>", "a", "bb"}),
		KV("scores", []float32{0, -1, -2}),
		KV("types", []int32{2, 1, 1}),
		KV("nested", []any{[]uint8{1}, []any{[]string{"x"}}}),
		KV("flag", true),
		KV("big", int64(-7)),
	}
	ts := []WriteTensor{
		{Name: "a", Shape: []int{2, 3}, Type: F32, Data: ramp(6, 1)},
		{Name: "b", Shape: []int{4}, Type: F16, Data: ramp(4, 2)},
		{Name: "c", Shape: []int{1, 32}, Type: Q8_0, Data: ramp(32, 3)},
		{Name: "d", Shape: []int{2}, Type: BF16, Data: ramp(2, 4)},
	}
	if err := Write(path, version, kv, ts); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// heapAllocs reads the cumulative bytes allocated by the process.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func FuzzParse(f *testing.F) {
	f.Add(fuzzSeed(f, 1))
	f.Add(fuzzSeed(f, 3))
	for _, rel := range []string{"models/stories260K.gguf", "models/stories260K-v3.gguf"} {
		if p, err := testassets.Find(rel); err == nil {
			if fh, err := os.Open(p); err == nil {
				b, _ := io.ReadAll(io.LimitReader(fh, 12<<10))
				fh.Close()
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		start := heapAllocs()
		file, err := Parse(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		for _, kv := range file.KV {
			file.Uint(kv.Key)
			file.Float(kv.Key)
			file.String(kv.Key)
			file.Strings(kv.Key)
			file.Float32s(kv.Key)
			file.Int32s(kv.Key)
		}
		for _, ti := range file.Tensors {
			if got, ok := file.Tensor(ti.Name); !ok || got.Name != ti.Name {
				t.Fatalf("Tensor(%q) lookup failed", ti.Name)
			}
			nb := ti.Bytes()
			if nb < 0 || file.DataOffset+int64(ti.Offset)+nb > int64(len(data)) {
				t.Fatalf("tensor %q: %d bytes at %d escape the %d-byte input", ti.Name, nb, ti.Offset, len(data))
			}
			vals, shape, err := file.ReadTensor(ti.Name)
			if err != nil {
				if !ti.Type.Decodable() && errors.Is(err, ErrUnsupported) {
					continue
				}
				t.Fatalf("tensor %q: %v", ti.Name, err)
			}
			n := 1
			for _, s := range shape {
				n *= s
			}
			if int64(len(vals)) != ti.NumElements() || n != len(vals) {
				t.Fatalf("tensor %q: %d values for shape %v", ti.Name, len(vals), shape)
			}
		}
		// Everything above is bounded by a small multiple of the input:
		// strings and nested arrays at most ~5× their encoding, decoded
		// tensors at most 5× (4-byte floats plus the raw bytes).
		if used := heapAllocs() - start; used > 64*uint64(len(data))+1<<20 {
			t.Fatalf("allocated %d bytes for a %d-byte input", used, len(data))
		}
	})
}
