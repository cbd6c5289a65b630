package checkpoints

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/model/safetensors"
)

// sampleProjections: 3 layers, hidden 6, kv_dim 4, ranks varying per layer.
// Values are multiples of 1/8 below 2^8, exact in F32, F16 and BF16.
func sampleProjections() *Projections {
	const hidden, kvDim = 6, 4
	p := &Projections{Hidden: hidden, KVDim: kvDim, Meta: map[string]string{
		"k_rank": "2,3,1", "init": "asvd", "alpha": "0.5", "base_model": "stories260K.gguf",
	}}
	v := float32(0)
	fill := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			v += 0.125
			if v > 31 {
				v = -31
			}
			x[i] = v
		}
		return x
	}
	for _, r := range [][2]int{{2, 3}, {3, 1}, {1, 2}} {
		kr, vr := r[0], r[1]
		p.Layers = append(p.Layers, kv.Factors{
			Ak: fill(kr * hidden), Bk: fill(kvDim * kr),
			Av: fill(vr * hidden), Bv: fill(kvDim * vr),
			KRank: kr, VRank: vr,
		})
	}
	return p
}

func TestProjectionsRoundTrip(t *testing.T) {
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16} {
		t.Run(string(dt), func(t *testing.T) {
			want := sampleProjections()
			path := filepath.Join(t.TempDir(), "cskv-factors.safetensors")
			if err := WriteProjections(path, want, dt); err != nil {
				t.Fatal(err)
			}
			got, err := ReadProjections(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip differs:\n got %+v\nwant %+v", got, want)
			}
			f, err := safetensors.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if ti, _ := f.Info("model.layers.0.self_attn.k_proj_a.weight"); ti.DType != dt {
				t.Errorf("stored dtype %s, want %s", ti.DType, dt)
			}
		})
	}
}

// TestProjectionsIndependentReader parses the written file by hand: 8-byte
// little-endian header length, JSON header, raw little-endian F32 data.
func TestProjectionsIndependentReader(t *testing.T) {
	p := sampleProjections()
	path := filepath.Join(t.TempDir(), "p.safetensors")
	if err := WriteProjections(path, p, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b[:8])
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	data := b[8+n:]

	var md map[string]string
	if err := json.Unmarshal(hdr["__metadata__"], &md); err != nil {
		t.Fatal(err)
	}
	if md["format"] != "cskv-projections" || md["format_version"] != "1" || md["init"] != "asvd" || md["base_model"] != "stories260K.gguf" {
		t.Errorf("metadata = %v", md)
	}
	delete(hdr, "__metadata__")
	if len(hdr) != 4*len(p.Layers) {
		t.Errorf("%d tensors, want %d", len(hdr), 4*len(p.Layers))
	}
	for i, l := range p.Layers {
		for _, c := range []struct {
			suffix string
			shape  []int
			data   []float32
		}{
			{"k_proj_a", []int{l.KRank, 6}, l.Ak},
			{"k_proj_b", []int{4, l.KRank}, l.Bk},
			{"v_proj_a", []int{l.VRank, 6}, l.Av},
			{"v_proj_b", []int{4, l.VRank}, l.Bv},
		} {
			name := fmt.Sprintf("model.layers.%d.self_attn.%s.weight", i, c.suffix)
			var e struct {
				DType   string   `json:"dtype"`
				Shape   []int    `json:"shape"`
				Offsets [2]int64 `json:"data_offsets"`
			}
			if err := json.Unmarshal(hdr[name], &e); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if e.DType != "F32" || !reflect.DeepEqual(e.Shape, c.shape) {
				t.Errorf("%s: %s %v, want F32 %v", name, e.DType, e.Shape, c.shape)
			}
			raw := data[e.Offsets[0]:e.Offsets[1]]
			if len(raw) != 4*len(c.data) {
				t.Fatalf("%s: %d bytes, want %d", name, len(raw), 4*len(c.data))
			}
			for j, w := range c.data {
				if g := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:])); g != w {
					t.Fatalf("%s[%d] = %v, want %v", name, j, g, w)
				}
			}
		}
	}
}

func TestWriteProjectionsRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(p *Projections)
		msg    string
	}{
		{"nan", func(p *Projections) { p.Layers[1].Bv[0] = float32(math.NaN()) }, `"model.layers.1.self_attn.v_proj_b.weight": element 0 is NaN`},
		{"length", func(p *Projections) { p.Layers[2].Ak = p.Layers[2].Ak[1:] }, `"model.layers.2.self_attn.k_proj_a.weight": shape [1 6] needs 6 values, have 5`},
		{"rank", func(p *Projections) { p.Layers[0].VRank = 0 }, "layer 0: ranks"},
		{"reserved meta", func(p *Projections) { p.Meta["format"] = "x" }, `metadata "format"`},
		{"no layers", func(p *Projections) { p.Layers = nil }, "no layers"},
		{"f16 overflow", func(p *Projections) { p.Layers[0].Ak[0] = 1e6 }, "overflows F16"},
	}
	for _, tc := range tests {
		p := sampleProjections()
		tc.modify(p)
		dir := t.TempDir()
		err := WriteProjections(filepath.Join(dir, "p.safetensors"), p, safetensors.F16)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.msg)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s: failed write left %v", tc.name, entries)
		}
	}
	// Meta may repeat the reserved keys with their own values.
	p := sampleProjections()
	p.Meta["format"], p.Meta["format_version"] = ProjectionsFormat, "1"
	if err := WriteProjections(filepath.Join(t.TempDir(), "p.safetensors"), p, safetensors.F32); err != nil {
		t.Errorf("reserved keys with correct values: %v", err)
	}
}

// projTensors returns the tensors WriteProjections would write for p, so a
// test can damage them and write them with safetensors.Write directly.
func projTensors(p *Projections) map[string]safetensors.Tensor {
	ts := map[string]safetensors.Tensor{}
	for i, l := range p.Layers {
		for k, c := range [4]struct {
			d []float32
			s []int
		}{{l.Ak, []int{l.KRank, p.Hidden}}, {l.Bk, []int{p.KVDim, l.KRank}}, {l.Av, []int{l.VRank, p.Hidden}}, {l.Bv, []int{p.KVDim, l.VRank}}} {
			n := projName(i, k)
			ts[n] = safetensors.Tensor{Name: n, Shape: c.s, DType: safetensors.F32, Data: c.d}
		}
	}
	return ts
}

func TestReadProjectionsErrors(t *testing.T) {
	okMeta := map[string]string{"format": ProjectionsFormat, "format_version": "1"}
	name := func(layer int, kind string) string {
		return fmt.Sprintf("model.layers.%d.self_attn.%s.weight", layer, kind)
	}
	tests := []struct {
		name   string
		meta   map[string]string
		modify func(ts map[string]safetensors.Tensor)
		is     error
		msg    string
	}{
		{"no format", map[string]string{}, nil, nil, "not a cskv projections file"},
		{"wrong version", map[string]string{"format": ProjectionsFormat, "format_version": "2"}, nil, ErrIncompatible, `format_version "2"`},
		{"unexpected tensor", okMeta, func(ts map[string]safetensors.Tensor) {
			ts["lm_head.weight"] = safetensors.Tensor{Name: "lm_head.weight", Shape: []int{1}, DType: safetensors.F32, Data: []float32{1}}
		}, nil, `unexpected tensor "lm_head.weight"`},
		{"leading zero index", okMeta, func(ts map[string]safetensors.Tensor) {
			n := "model.layers.01.self_attn.k_proj_a.weight"
			ts[n] = safetensors.Tensor{Name: n, Shape: []int{1}, DType: safetensors.F32, Data: []float32{1}}
		}, nil, "unexpected tensor"},
		{"missing tensor", okMeta, func(ts map[string]safetensors.Tensor) { delete(ts, name(1, "v_proj_b")) }, nil,
			`layer 1: tensor "model.layers.1.self_attn.v_proj_b.weight" missing`},
		{"gap in layers", okMeta, func(ts map[string]safetensors.Tensor) {
			for _, k := range kv.ExportNames {
				delete(ts, name(1, k))
			}
		}, nil, "not contiguous from 0: layer 1 missing"},
		{"no layers", okMeta, func(ts map[string]safetensors.Tensor) { clear(ts) }, nil, "no layers"},
		{"k rank mismatch", okMeta, func(ts map[string]safetensors.Tensor) {
			ts[name(1, "k_proj_b")] = safetensors.Tensor{Name: name(1, "k_proj_b"), Shape: []int{4, 2}, DType: safetensors.F32, Data: make([]float32, 8)}
		}, nil, "layer 1: k rank differs: k_proj_a [3 6] vs k_proj_b [4 2]"},
		{"v rank mismatch", okMeta, func(ts map[string]safetensors.Tensor) {
			ts[name(0, "v_proj_a")] = safetensors.Tensor{Name: name(0, "v_proj_a"), Shape: []int{2, 6}, DType: safetensors.F32, Data: make([]float32, 12)}
		}, nil, "layer 0: v rank differs: v_proj_a [2 6] vs v_proj_b [4 3]"},
		{"hidden across layers", okMeta, func(ts map[string]safetensors.Tensor) {
			ts[name(2, "k_proj_a")] = safetensors.Tensor{Name: name(2, "k_proj_a"), Shape: []int{1, 5}, DType: safetensors.F32, Data: make([]float32, 5)}
			ts[name(2, "v_proj_a")] = safetensors.Tensor{Name: name(2, "v_proj_a"), Shape: []int{2, 5}, DType: safetensors.F32, Data: make([]float32, 10)}
		}, nil, "layer 2: hidden differs from layer 0: k_proj_a [1 5] vs [2 6]"},
		{"hidden k vs v", okMeta, func(ts map[string]safetensors.Tensor) {
			ts[name(2, "v_proj_a")] = safetensors.Tensor{Name: name(2, "v_proj_a"), Shape: []int{2, 5}, DType: safetensors.F32, Data: make([]float32, 10)}
		}, nil, "layer 2: hidden differs: k_proj_a [1 6] vs v_proj_a [2 5]"},
		{"kv_dim across layers", okMeta, func(ts map[string]safetensors.Tensor) {
			ts[name(1, "k_proj_b")] = safetensors.Tensor{Name: name(1, "k_proj_b"), Shape: []int{5, 3}, DType: safetensors.F32, Data: make([]float32, 15)}
			ts[name(1, "v_proj_b")] = safetensors.Tensor{Name: name(1, "v_proj_b"), Shape: []int{5, 1}, DType: safetensors.F32, Data: make([]float32, 5)}
		}, nil, "layer 1: kv_dim differs from layer 0: k_proj_b [5 3] vs [4 2]"},
		{"kv_dim k vs v", okMeta, func(ts map[string]safetensors.Tensor) {
			ts[name(1, "v_proj_b")] = safetensors.Tensor{Name: name(1, "v_proj_b"), Shape: []int{5, 1}, DType: safetensors.F32, Data: make([]float32, 5)}
		}, nil, "layer 1: kv_dim differs: k_proj_b [4 3] vs v_proj_b [5 1]"},
		{"not 2-D", okMeta, func(ts map[string]safetensors.Tensor) {
			ts[name(0, "k_proj_a")] = safetensors.Tensor{Name: name(0, "k_proj_a"), Shape: []int{12}, DType: safetensors.F32, Data: make([]float32, 12)}
		}, nil, "want 2-D"},
		{"nan", okMeta, func(ts map[string]safetensors.Tensor) {
			x := ts[name(2, "v_proj_b")]
			x.Data = append([]float32{}, x.Data...)
			x.Data[3] = float32(math.Inf(1))
			ts[name(2, "v_proj_b")] = x
		}, ErrNonFinite, `tensor "model.layers.2.self_attn.v_proj_b.weight": element 3 is +Inf`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := projTensors(sampleProjections())
			if tc.modify != nil {
				tc.modify(ts)
			}
			var list []safetensors.Tensor
			for _, x := range ts {
				list = append(list, x)
			}
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			if err := safetensors.Write(path, list, tc.meta); err != nil {
				t.Fatal(err)
			}
			_, err := ReadProjections(path)
			if err == nil {
				t.Fatal("ReadProjections succeeded")
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), path) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Errorf("err = %v, want %v mentioning %q and the path", err, tc.is, tc.msg)
			}
		})
	}
	if _, err := ReadProjections(filepath.Join(t.TempDir(), "absent.safetensors")); err == nil {
		t.Error("reading a missing file succeeded")
	}
}

// TestReadForeignProjections: a file in the projections tensor layout with
// no cskv metadata (as another tool writes it) is refused by
// ReadProjections and read, with the same checks on its tensors, by
// ReadForeignProjections, also with torch's "format": "pt" metadata; a
// cskv file of another version stays refused.
func TestReadForeignProjections(t *testing.T) {
	want := sampleProjections()
	var ts []safetensors.Tensor
	for _, tt := range projTensors(want) {
		ts = append(ts, tt)
	}
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.safetensors")
	if err := safetensors.Write(plain, ts, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadProjections(plain); err == nil || !strings.Contains(err.Error(), "not a cskv projections file") {
		t.Fatalf("ReadProjections of a plain file: %v", err)
	}
	got, err := ReadForeignProjections(plain)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hidden != want.Hidden || got.KVDim != want.KVDim || !reflect.DeepEqual(got.Layers, want.Layers) {
		t.Fatalf("foreign read differs")
	}
	pt := filepath.Join(dir, "pt.safetensors")
	if err := safetensors.Write(pt, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadForeignProjections(pt); err != nil {
		t.Fatalf("file with format pt: %v", err)
	}
	v2 := filepath.Join(dir, "v2.safetensors")
	if err := safetensors.Write(v2, ts, map[string]string{"format": ProjectionsFormat, "format_version": "2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadForeignProjections(v2); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("cskv file of version 2: %v", err)
	}
	ts = ts[1:] // a missing tensor is still caught
	if err := safetensors.Write(plain, ts, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadForeignProjections(plain); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing tensor: %v", err)
	}
}
