// Package safetensors reads and writes the safetensors container used by
// Hugging Face model repositories: an 8-byte little-endian header length N, N
// bytes of JSON header, then the raw little-endian tensor data.
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (offsets relative to the start of the data section), plus an
// optional "__metadata__" object of string values. Only F32, F16 and BF16
// tensors are supported; everything is handed out as float32.
//
// Open reads only the header; tensors are read on demand with ReadAt, so a
// file larger than memory opens fine and a File is safe for concurrent reads.
package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
)

// ErrUnsupported is wrapped by errors about tensors whose dtype this package
// does not handle.
var ErrUnsupported = errors.New("unsupported dtype")

// ErrFormat is wrapped by errors about malformed files and headers.
var ErrFormat = errors.New("malformed safetensors")

// MaxHeaderSize bounds the JSON header (the reference implementation uses the
// same 100 MB limit); a larger length field means a corrupt or hostile file.
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header key holding free-form string metadata.
const metadataKey = "__metadata__"

// DType is a tensor element type, spelled as in the header ("F32", ...).
type DType string

// The supported element types.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
)

// Size returns the element size in bytes, or 0 for an unsupported dtype.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	}
	return 0
}

// TensorInfo locates one tensor. Begin and End are byte offsets relative to
// the start of the data section (End exclusive).
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int
	Begin int64
	End   int64
}

// NumElements returns the product of the shape (1 for a scalar).
func (ti TensorInfo) NumElements() int {
	n := 1
	for _, d := range ti.Shape {
		n *= d
	}
	return n
}

// Header is a parsed and validated safetensors header.
type Header struct {
	Tensors  []TensorInfo // sorted by name
	Metadata map[string]string
}

// entry is one tensor's raw header record. Pointers detect missing fields.
type entry struct {
	DType   *string  `json:"dtype"`
	Shape   *[]int64 `json:"shape"`
	Offsets *[]int64 `json:"data_offsets"`
}

// ParseHeader parses and validates the JSON header b of a file whose data
// section (everything after the header) is dataSize bytes long. It checks that
// every tensor has a supported dtype and non-negative dims, that its byte range
// lies inside the data section and matches its shape, and that no two tensors
// overlap. Errors wrap ErrFormat, or ErrUnsupported for an unknown dtype.
func ParseHeader(b []byte, dataSize int64) (Header, error) {
	if dataSize < 0 {
		return Header{}, fmt.Errorf("%w: negative data size %d", ErrFormat, dataSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return Header{}, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return Header{}, fmt.Errorf("%w: header is not a JSON object", ErrFormat)
	}
	h := Header{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Header{}, fmt.Errorf("%w: header: %v", ErrFormat, err)
		}
		name, ok := tok.(string)
		if !ok {
			return Header{}, fmt.Errorf("%w: header: unexpected token %v", ErrFormat, tok)
		}
		if seen[name] {
			return Header{}, fmt.Errorf("%w: header: duplicate key %q", ErrFormat, name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return Header{}, fmt.Errorf("%w: header: key %q: %v", ErrFormat, name, err)
		}
		if name == metadataKey {
			md, err := parseMetadata(raw)
			if err != nil {
				return Header{}, err
			}
			h.Metadata = md
			continue
		}
		ti, err := parseEntry(name, raw, dataSize)
		if err != nil {
			return Header{}, err
		}
		h.Tensors = append(h.Tensors, ti)
	}
	if _, err := dec.Token(); err != nil { // closing '}'
		return Header{}, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	// Only whitespace (the writer's padding) may follow the object.
	if len(bytes.TrimRight(b[dec.InputOffset():], " \t\r\n")) != 0 {
		return Header{}, fmt.Errorf("%w: header: trailing data after JSON object", ErrFormat)
	}
	if err := checkOverlap(h.Tensors); err != nil {
		return Header{}, err
	}
	sort.Slice(h.Tensors, func(i, j int) bool { return h.Tensors[i].Name < h.Tensors[j].Name })
	return h, nil
}

func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	var md map[string]string
	if err := json.Unmarshal(raw, &md); err != nil {
		return nil, fmt.Errorf("%w: header: %s must map strings to strings: %v", ErrFormat, metadataKey, err)
	}
	return md, nil
}

func parseEntry(name string, raw json.RawMessage, dataSize int64) (TensorInfo, error) {
	var e entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: %v", ErrFormat, name, err)
	}
	if e.DType == nil || e.Shape == nil || e.Offsets == nil {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: needs dtype, shape and data_offsets", ErrFormat, name)
	}
	dt := DType(*e.DType)
	size := dt.Size()
	if size == 0 {
		return TensorInfo{}, fmt.Errorf("tensor %q: dtype %q: %w", name, *e.DType, ErrUnsupported)
	}
	if len(*e.Offsets) != 2 {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: data_offsets has %d values, want 2", ErrFormat, name, len(*e.Offsets))
	}
	begin, end := (*e.Offsets)[0], (*e.Offsets)[1]
	if begin < 0 || end < begin || end > dataSize {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: data_offsets [%d, %d] outside data section of %d bytes",
			ErrFormat, name, begin, end, dataSize)
	}
	// numel × size must equal end−begin. Multiply against the byte count so
	// no intermediate can overflow; a zero dim makes the product 0.
	want := uint64(end - begin)
	shape := make([]int, len(*e.Shape))
	zero := false
	for i, d := range *e.Shape {
		if d < 0 || uint64(d) > math.MaxInt {
			return TensorInfo{}, fmt.Errorf("%w: tensor %q: bad dimension %d in shape %v", ErrFormat, name, d, *e.Shape)
		}
		zero = zero || d == 0
		shape[i] = int(d)
	}
	need, tooBig := uint64(0), false
	if !zero {
		need = uint64(size)
		for _, d := range *e.Shape {
			if need > want/uint64(d) {
				tooBig = true
				break
			}
			need *= uint64(d)
		}
	}
	if tooBig {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: %s shape %v needs more than the %d bytes data_offsets give",
			ErrFormat, name, dt, *e.Shape, want)
	}
	if need != want {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: %s shape %v needs %d bytes, data_offsets give %d",
			ErrFormat, name, dt, *e.Shape, need, want)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Begin: begin, End: end}, nil
}

// checkOverlap rejects tensors whose non-empty byte ranges intersect.
func checkOverlap(ts []TensorInfo) error {
	idx := make([]int, 0, len(ts))
	for i, t := range ts {
		if t.End > t.Begin {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool {
		ta, tb := ts[idx[a]], ts[idx[b]]
		if ta.Begin != tb.Begin {
			return ta.Begin < tb.Begin
		}
		return ta.Name < tb.Name
	})
	for k := 1; k < len(idx); k++ {
		prev, cur := ts[idx[k-1]], ts[idx[k]]
		if cur.Begin < prev.End {
			return fmt.Errorf("%w: tensors %q [%d, %d] and %q [%d, %d] overlap",
				ErrFormat, prev.Name, prev.Begin, prev.End, cur.Name, cur.Begin, cur.End)
		}
	}
	return nil
}
