package safetensors

import (
	"bytes"
	"math/big"
	"testing"
)

// FuzzParseHeader feeds arbitrary headers to ParseHeader. It must never panic,
// and whatever it accepts must satisfy the format's invariants, re-checked
// here with arbitrary-precision arithmetic.
func FuzzParseHeader(f *testing.F) {
	seeds := []struct {
		hdr  string
		size int64
	}{
		{`{}`, 0},
		{`{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}`, 16},
		{`{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[],"data_offsets":[6,8]}}   `, 8},
		{`{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[0,4],"data_offsets":[4,4]}}`, 4},
		{`{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}`, 16},
		{`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 16},
		{`{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`, 8},
		{`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4},
		{`{"a":1}`, 0},
		{`[]`, 0},
	}
	for _, s := range seeds {
		f.Add([]byte(s.hdr), s.size)
	}
	f.Fuzz(func(t *testing.T, b []byte, dataSize int64) {
		h, err := ParseHeader(b, dataSize)
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(b)) == 0 || bytes.TrimSpace(b)[0] != '{' {
			t.Fatalf("accepted a header that is not an object: %q", b)
		}
		for i, ti := range h.Tensors {
			if i > 0 && h.Tensors[i-1].Name >= ti.Name {
				t.Fatalf("tensors not sorted or duplicated: %q, %q", h.Tensors[i-1].Name, ti.Name)
			}
			if ti.Name == metadataKey {
				t.Fatal("__metadata__ reported as a tensor")
			}
			if ti.DType.Size() == 0 {
				t.Fatalf("%q: unsupported dtype %q accepted", ti.Name, ti.DType)
			}
			if ti.Begin < 0 || ti.End < ti.Begin || ti.End > dataSize {
				t.Fatalf("%q: range [%d, %d] outside [0, %d]", ti.Name, ti.Begin, ti.End, dataSize)
			}
			n := big.NewInt(int64(ti.DType.Size()))
			for _, d := range ti.Shape {
				if d < 0 {
					t.Fatalf("%q: negative dim in %v", ti.Name, ti.Shape)
				}
				n.Mul(n, big.NewInt(int64(d)))
			}
			if n.Cmp(big.NewInt(ti.End-ti.Begin)) != 0 {
				t.Fatalf("%q: shape %v × %d bytes = %v, range holds %d", ti.Name, ti.Shape, ti.DType.Size(), n, ti.End-ti.Begin)
			}
			if int64(ti.NumElements())*int64(ti.DType.Size()) != ti.End-ti.Begin {
				t.Fatalf("%q: NumElements %d disagrees with range", ti.Name, ti.NumElements())
			}
			for _, o := range h.Tensors[:i] {
				if o.Begin < ti.End && ti.Begin < o.End {
					t.Fatalf("%q [%d, %d] overlaps %q [%d, %d]", ti.Name, ti.Begin, ti.End, o.Name, o.Begin, o.End)
				}
			}
		}
	})
}

// FuzzFile feeds whole files to NewFile; every tensor of an accepted file
// must then read back with as many values as its shape says.
func FuzzFile(f *testing.F) {
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(rawFile(`{"a":{"dtype":"F16","shape":[1,3],"data_offsets":[2,8]},"b":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}}  `, make([]byte, 8)))
	f.Add(rawFile(`{"__metadata__":{"k":"v"}}`, nil))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, '{'})
	f.Fuzz(func(t *testing.T, b []byte) {
		sf, err := NewFile(bytes.NewReader(b), int64(len(b)), "fuzz")
		if err != nil {
			return
		}
		for _, name := range sf.Names() {
			ti, _ := sf.Info(name)
			data, shape, err := sf.ReadFloat32(name)
			if err != nil {
				t.Fatalf("%q: %v", name, err)
			}
			if len(data) != ti.NumElements() || len(shape) != len(ti.Shape) {
				t.Fatalf("%q: %d values for shape %v", name, len(data), ti.Shape)
			}
		}
	})
}
