package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/cskv/cskv/atomicfile"
	"github.com/cskv/cskv/model/dtype"
)

// Tensor is one tensor to write: float32 data in row-major order, stored as
// DType.
type Tensor struct {
	Name  string
	Shape []int
	DType DType
	Data  []float32 // len = product of Shape

	// Fill, when Data is nil, supplies the data in pieces (a tensor too
	// large to hold): it writes elements off … off+len(dst)−1 into dst.
	Fill func(dst []float32, off int) error
}

// headerEntry is the header record as written; field order matches the
// reference writer.
type headerEntry struct {
	DType   DType    `json:"dtype"`
	Shape   []int    `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// Write stores tensors and metadata as a safetensors file at path. Data is
// converted to each tensor's DType (round-to-nearest-even for F16 and BF16; a
// finite value that would overflow to ±Inf is an error). The header is padded
// with spaces to a multiple of 8 bytes and tensors are laid out in name order.
// The file is written atomically: a temporary file in the same directory is
// fsynced and renamed over path, and removed on any error.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	hdr, ts, err := buildHeader(tensors, metadata)
	if err != nil {
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	return writeAtomic(path, func(w io.Writer) error { return writeBody(w, hdr, ts) })
}

// Encode writes the bytes Write would put in a file to w (for callers that
// manage the file themselves). Errors from w are returned as they are.
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	hdr, ts, err := buildHeader(tensors, metadata)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return writeBody(w, hdr, ts)
}

func writeBody(w io.Writer, hdr []byte, ts []Tensor) error {
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, t := range ts {
		if err := encode(w, t); err != nil {
			return err
		}
	}
	return nil
}

// buildHeader validates the tensors and returns the padded JSON header and the
// tensors in layout (name) order.
func buildHeader(tensors []Tensor, metadata map[string]string) ([]byte, []Tensor, error) {
	ts := slices.Clone(tensors)
	slices.SortFunc(ts, func(a, b Tensor) int { return strings.Compare(a.Name, b.Name) })
	entries := make(map[string]any, len(ts)+1)
	var off int64
	for i, t := range ts {
		if t.Name == "" || t.Name == metadataKey {
			return nil, nil, fmt.Errorf("invalid tensor name %q", t.Name)
		}
		if i > 0 && ts[i-1].Name == t.Name {
			return nil, nil, fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		size := t.DType.Size()
		if size == 0 {
			return nil, nil, fmt.Errorf("tensor %q: dtype %q: %w", t.Name, t.DType, ErrUnsupported)
		}
		n, ok := numel(t.Shape)
		if !ok {
			return nil, nil, fmt.Errorf("tensor %q: invalid shape %v", t.Name, t.Shape)
		}
		if t.Fill == nil && n != len(t.Data) {
			return nil, nil, fmt.Errorf("tensor %q: shape %v needs %d values, have %d", t.Name, t.Shape, n, len(t.Data))
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		end := off + int64(n)*int64(size)
		entries[t.Name] = headerEntry{DType: t.DType, Shape: shape, Offsets: [2]int64{off, end}}
		off = end
	}
	if len(metadata) > 0 {
		entries[metadataKey] = metadata
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(entries); err != nil {
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	hdr := bytes.TrimRight(buf.Bytes(), "\n")
	if pad := (8 - len(hdr)%8) % 8; pad > 0 {
		hdr = append(hdr, bytes.Repeat([]byte{' '}, pad)...)
	}
	return hdr, ts, nil
}

// numel returns the product of shape, or false when a dim is negative or the
// product overflows int.
func numel(shape []int) (int, bool) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d == 0 {
			n = 0
		}
	}
	if n == 0 {
		return 0, true
	}
	for _, d := range shape {
		if n > math.MaxInt/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// encode writes t.Data (or what t.Fill supplies) as little-endian t.DType.
func encode(w io.Writer, t Tensor) error {
	if t.Fill == nil {
		return encodeValues(w, t, t.Data, 0)
	}
	n, _ := numel(t.Shape) // checked by buildHeader
	part := make([]float32, min(readChunk/4, n))
	for off := 0; off < n; off += len(part) {
		p := part[:min(len(part), n-off)]
		if err := t.Fill(p, off); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if err := encodeValues(w, t, p, off); err != nil {
			return err
		}
	}
	return nil
}

// encodeValues writes data, elements off … of t, as little-endian t.DType.
func encodeValues(w io.Writer, t Tensor, data []float32, off int) error {
	size := t.DType.Size()
	buf := make([]byte, 0, min(readChunk, size*len(data)))
	flush := func() error {
		_, err := w.Write(buf)
		buf = buf[:0]
		return err
	}
	for i, v := range data {
		switch t.DType {
		case F32:
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		case F16, BF16:
			var h uint16
			var back float32
			if t.DType == F16 {
				h = dtype.F32ToF16(v)
				back = dtype.F16ToF32(h)
			} else {
				h = dtype.F32ToBF16(v)
				back = dtype.BF16ToF32(h)
			}
			if math.IsInf(float64(back), 0) && !math.IsInf(float64(v), 0) {
				return fmt.Errorf("tensor %q: element %d (%g) overflows %s", t.Name, off+i, v, t.DType)
			}
			buf = binary.LittleEndian.AppendUint16(buf, h)
		}
		if len(buf)+4 > cap(buf) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// writeAtomic writes path atomically (package atomicfile): on error path is
// untouched and no temporary file is left.
func writeAtomic(path string, write func(io.Writer) error) error {
	if err := atomicfile.WriteFunc(path, write); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return nil
}
