package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"

	"github.com/cskv/cskv/model/dtype"
)

// readChunk is the number of bytes read per ReadAt when loading a tensor, so
// a large tensor never needs its raw bytes and its float32 copy in memory at
// once.
const readChunk = 1 << 20

// File is an open safetensors file. Only the header is held in memory; the
// methods are safe for concurrent use.
type File struct {
	name      string
	r         io.ReaderAt
	closer    io.Closer // nil when the caller owns r
	dataStart int64     // file offset of the data section
	hdr       Header
	index     map[string]int // name → position in hdr.Tensors
}

// Open opens the safetensors file at path and validates its header. Nothing
// beyond the header is read.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("safetensors %s: not a regular file", path)
	}
	sf, err := NewFile(f, st.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	sf.closer = f
	return sf, nil
}

// NewFile reads the header of a safetensors file of size bytes held in r.
// name is used in errors. Close on the result does not close r.
func NewFile(r io.ReaderAt, size int64, name string) (*File, error) {
	if size < 8 {
		return nil, fmt.Errorf("safetensors %s: %w: file of %d bytes has no header length", name, ErrFormat, size)
	}
	var lenBuf [8]byte
	if err := readFull(r, lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors %s: header length: %w", name, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors %s: %w: header length %d exceeds the %d-byte limit", name, ErrFormat, n, MaxHeaderSize)
	}
	if n > uint64(size-8) {
		return nil, fmt.Errorf("safetensors %s: %w: header length %d exceeds the %d bytes after the length field",
			name, ErrFormat, n, size-8)
	}
	buf := make([]byte, n)
	if err := readFull(r, buf, 8); err != nil {
		return nil, fmt.Errorf("safetensors %s: header: %w", name, err)
	}
	hdr, err := ParseHeader(buf, size-8-int64(n))
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", name, err)
	}
	f := &File{name: name, r: r, dataStart: 8 + int64(n), hdr: hdr, index: make(map[string]int, len(hdr.Tensors))}
	for i, t := range hdr.Tensors {
		f.index[t.Name] = i
	}
	return f, nil
}

// readFull reads len(b) bytes at off, treating a short read as an error.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Name returns the path (or name) the file was opened with.
func (f *File) Name() string { return f.name }

// Names returns the tensor names in sorted order.
func (f *File) Names() []string {
	names := make([]string, len(f.hdr.Tensors))
	for i, t := range f.hdr.Tensors {
		names[i] = t.Name
	}
	return names
}

// Info returns the location, dtype and shape of a tensor.
func (f *File) Info(name string) (TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	ti := f.hdr.Tensors[i]
	ti.Shape = slices.Clone(ti.Shape)
	return ti, true
}

// Metadata returns a copy of the header's __metadata__ (nil when absent).
func (f *File) Metadata() map[string]string { return maps.Clone(f.hdr.Metadata) }

// ReadFloat32 reads a tensor and converts it to float32 (exactly: every F16
// and BF16 value is representable). It returns the data in row-major order
// and the shape.
func (f *File) ReadFloat32(name string) ([]float32, []int, error) {
	i, ok := f.index[name]
	if !ok {
		return nil, nil, fmt.Errorf("safetensors %s: no tensor %q", f.name, name)
	}
	ti := f.hdr.Tensors[i]
	out := make([]float32, ti.NumElements())
	size := int64(ti.DType.Size())
	buf := make([]byte, min(readChunk, ti.End-ti.Begin))
	for off := int64(0); off < ti.End-ti.Begin; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), ti.End-ti.Begin-off)]
		if err := readFull(f.r, b, f.dataStart+ti.Begin+off); err != nil {
			return nil, nil, fmt.Errorf("safetensors %s: tensor %q: %w", f.name, name, err)
		}
		decode(out[off/size:], b, ti.DType)
	}
	return out, slices.Clone(ti.Shape), nil
}

// ReadFloat32At reads elements off … off+len(dst)−1 of a tensor (in
// row-major order) into dst, converted to float32, without reading the rest.
func (f *File) ReadFloat32At(name string, dst []float32, off int) error {
	i, ok := f.index[name]
	if !ok {
		return fmt.Errorf("safetensors %s: no tensor %q", f.name, name)
	}
	ti := f.hdr.Tensors[i]
	if off < 0 || off+len(dst) > ti.NumElements() {
		return fmt.Errorf("safetensors %s: tensor %q: elements [%d, %d) outside its %d", f.name, name, off, off+len(dst), ti.NumElements())
	}
	size := ti.DType.Size()
	per := readChunk / size // elements per read
	buf := make([]byte, min(readChunk, size*len(dst)))
	for e := 0; e < len(dst); e += per {
		k := min(per, len(dst)-e)
		b := buf[:k*size]
		if err := readFull(f.r, b, f.dataStart+ti.Begin+int64(off+e)*int64(size)); err != nil {
			return fmt.Errorf("safetensors %s: tensor %q: %w", f.name, name, err)
		}
		decode(dst[e:e+k], b, ti.DType)
	}
	return nil
}

// decode converts little-endian raw elements of type dt into dst.
func decode(dst []float32, b []byte, dt DType) {
	switch dt {
	case F32:
		for i := range len(b) / 4 {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case F16:
		for i := range len(b) / 2 {
			dst[i] = dtype.F16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case BF16:
		for i := range len(b) / 2 {
			dst[i] = dtype.BF16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
}

// Close releases the file. It does not close a reader given to NewFile.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	if err := f.closer.Close(); err != nil {
		return fmt.Errorf("safetensors %s: %w", f.name, err)
	}
	return nil
}
