package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/cskv/cskv/model/dtype"
)

// Open parses the GGUF file at path and keeps it open for ReadTensor; call
// Close when done. Errors name the path.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("gguf: %s: %w", path, err)
	}
	f, err := parse(fh, st.Size())
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("gguf: %s: %w", path, err)
	}
	f.Path = path
	f.closer = fh
	return f, nil
}

// Parse parses a GGUF image of size bytes read through r. ReadTensor keeps
// reading through r, which must stay valid while the File is used.
func Parse(r io.ReaderAt, size int64) (*File, error) {
	f, err := parse(r, size)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	return f, nil
}

// formatErr builds an error wrapping ErrFormat.
func formatErr(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrFormat)
}

// chunk is the size of the decoder's read-ahead window.
const chunk = 64 << 10

// decoder reads the header sequentially through an io.ReaderAt, buffering a
// window so small fields cost no system call. Every read is checked against
// the bytes that remain, so header fields cannot drive allocations beyond the
// input size.
type decoder struct {
	r      io.ReaderAt
	size   int64
	off    int64 // absolute position of the next read
	buf    []byte
	bufOff int64
	wide   bool // v2+: counts and lengths are uint64
}

func (d *decoder) remaining() int64 { return d.size - d.off }

// next returns the next n bytes; the slice is valid until the next call.
func (d *decoder) next(n int64, what string) ([]byte, error) {
	if n < 0 || n > d.remaining() {
		return nil, formatErr("truncated at byte %d reading %s (%d bytes needed, %d left)", d.off, what, n, d.remaining())
	}
	if d.off >= d.bufOff && d.off+n <= d.bufOff+int64(len(d.buf)) {
		s := d.off - d.bufOff
		d.off += n
		return d.buf[s : s+n], nil
	}
	var p []byte
	if n <= chunk {
		m := min(int64(chunk), d.remaining())
		if int64(cap(d.buf)) < m {
			d.buf = make([]byte, 0, m)
		}
		d.buf = d.buf[:m]
		if err := readFull(d.r, d.buf, d.off); err != nil {
			d.buf = d.buf[:0]
			return nil, fmt.Errorf("reading %s at byte %d: %w", what, d.off, err)
		}
		d.bufOff = d.off
		p = d.buf[:n]
	} else {
		p = make([]byte, n)
		if err := readFull(d.r, p, d.off); err != nil {
			return nil, fmt.Errorf("reading %s at byte %d: %w", what, d.off, err)
		}
	}
	d.off += n
	return p, nil
}

// readFull reads len(p) bytes at off; a short read is a format error.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return formatErr("short read (%d of %d bytes)", n, len(p))
	}
	return err
}

func (d *decoder) u8(what string) (uint8, error) {
	b, err := d.next(1, what)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (d *decoder) u16(what string) (uint16, error) {
	b, err := d.next(2, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (d *decoder) u32(what string) (uint32, error) {
	b, err := d.next(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	b, err := d.next(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// lenSize is the encoded size of a count or length field.
func (d *decoder) lenSize() int64 {
	if d.wide {
		return 8
	}
	return 4
}

// length reads a count or length (uint32 in v1, uint64 in v2+) and checks
// that count × minSize bytes remain.
func (d *decoder) length(what string, minSize int64) (int64, error) {
	var n uint64
	if d.wide {
		v, err := d.u64(what)
		if err != nil {
			return 0, err
		}
		n = v
	} else {
		v, err := d.u32(what)
		if err != nil {
			return 0, err
		}
		n = uint64(v)
	}
	rem := uint64(d.remaining())
	if minSize > 0 && n > rem/uint64(minSize) {
		return 0, formatErr("%s %d at byte %d exceeds the %d bytes left (at least %d bytes each)", what, n, d.off, rem, minSize)
	}
	return int64(n), nil
}

func (d *decoder) str(what string) (string, error) {
	n, err := d.length(what+" length", 1)
	if err != nil {
		return "", err
	}
	b, err := d.next(n, what)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// minValueSize is the least number of bytes a value of type t can occupy.
func (d *decoder) minValueSize(t ValueType) int64 {
	switch t {
	case TypeString:
		return d.lenSize()
	case TypeArray:
		return 4 + d.lenSize()
	}
	return int64(t.scalarSize())
}

// value reads one value of type t.
func (d *decoder) value(t ValueType, depth int) (any, error) {
	if c, ok := scalars[t]; ok {
		b, err := d.next(int64(c.size), c.what)
		if err != nil {
			return nil, err
		}
		return c.one(b), nil
	}
	switch t {
	case TypeString:
		return d.str("string")
	case TypeArray:
		return d.array(depth + 1)
	}
	return nil, formatErr("unknown value type %d at byte %d", uint32(t), d.off-4)
}

// array reads an array (element type, count, elements) as a typed slice, or
// []any for arrays of arrays.
func (d *decoder) array(depth int) (any, error) {
	if depth > maxNesting {
		return nil, formatErr("arrays nested deeper than %d at byte %d", maxNesting, d.off)
	}
	et, err := d.u32("array element type")
	if err != nil {
		return nil, err
	}
	t := ValueType(et)
	if !t.valid() {
		return nil, formatErr("unknown array element type %d at byte %d", et, d.off-4)
	}
	n, err := d.length("array length", d.minValueSize(t))
	if err != nil {
		return nil, err
	}
	if sz := int64(t.scalarSize()); sz > 0 {
		b, err := d.next(n*sz, "array data") // n*sz ≤ remaining, checked by length
		if err != nil {
			return nil, err
		}
		return decodeScalars(t, b, int(n)), nil
	}
	switch t {
	case TypeString:
		out := make([]string, n)
		for i := range out {
			if out[i], err = d.str("string array element"); err != nil {
				return nil, err
			}
		}
		return out, nil
	default: // TypeArray
		out := make([]any, n)
		for i := range out {
			if out[i], err = d.array(depth + 1); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
}

// decodeScalars decodes the n little-endian values of fixed-size type t in
// b into t's typed slice.
func decodeScalars(t ValueType, b []byte, n int) any { return scalars[t].many(b, n) }

// scalar is the decoding of one fixed-size value type: its encoded size, one
// value as its Go type, n values as the typed slice, and its name in errors.
type scalar struct {
	size int
	what string
	one  func(b []byte) any
	many func(b []byte, n int) any
}

func scalarOf[T any](size int, what string, f func([]byte) T) scalar {
	return scalar{size: size, what: what, one: func(b []byte) any { return f(b) }, many: func(b []byte, n int) any { return each(b, n, size, f) }}
}

// scalars is the table of the fixed-size value types (little-endian).
var scalars = map[ValueType]scalar{
	TypeUint8:   scalarOf(1, "u8", func(b []byte) uint8 { return b[0] }),
	TypeInt8:    scalarOf(1, "i8", func(b []byte) int8 { return int8(b[0]) }),
	TypeBool:    scalarOf(1, "bool", func(b []byte) bool { return b[0] != 0 }),
	TypeUint16:  scalarOf(2, "u16", le.Uint16),
	TypeInt16:   scalarOf(2, "i16", func(b []byte) int16 { return int16(le.Uint16(b)) }),
	TypeUint32:  scalarOf(4, "u32", le.Uint32),
	TypeInt32:   scalarOf(4, "i32", func(b []byte) int32 { return int32(le.Uint32(b)) }),
	TypeFloat32: scalarOf(4, "f32", func(b []byte) float32 { return math.Float32frombits(le.Uint32(b)) }),
	TypeUint64:  scalarOf(8, "u64", le.Uint64),
	TypeInt64:   scalarOf(8, "i64", func(b []byte) int64 { return int64(le.Uint64(b)) }),
	TypeFloat64: scalarOf(8, "f64", func(b []byte) float64 { return math.Float64frombits(le.Uint64(b)) }),
}

// le is the byte order of every GGUF value.
var le = binary.LittleEndian

// each decodes n values of size bytes each from b with f.
func each[T any](b []byte, n, size int, f func([]byte) T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = f(b[size*i:])
	}
	return out
}

func parse(r io.ReaderAt, size int64) (*File, error) {
	if size < 0 {
		return nil, formatErr("negative size %d", size)
	}
	d := &decoder{r: r, size: size}
	magic, err := d.next(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != Magic {
		return nil, formatErr("bad magic %q (not a GGUF file)", magic)
	}
	version, err := d.u32("version")
	if err != nil {
		return nil, err
	}
	switch {
	case version >= 1 && version <= 3:
	case version&0xffff == 0 && version>>24 >= 1 && version>>24 <= 3:
		return nil, fmt.Errorf("version %d: big-endian GGUF files: %w", version>>24, ErrUnsupported)
	default:
		return nil, fmt.Errorf("version %d (only 1, 2 and 3 are supported): %w", version, ErrUnsupported)
	}
	d.wide = version >= 2
	ls := d.lenSize()
	minTensor := ls + 4 + ls + 4 + 8 // name length, n_dims, one dim, type, offset
	minKV := ls + 4 + 1              // key length, type, smallest value

	nT, err := d.length("tensor count", minTensor)
	if err != nil {
		return nil, err
	}
	nKV, err := d.length("metadata count", minKV)
	if err != nil {
		return nil, err
	}
	// Both lists must fit together in what is left.
	if nT*minTensor > d.remaining()-nKV*minKV {
		return nil, formatErr("%d tensors and %d metadata entries cannot fit in the %d bytes left", nT, nKV, d.remaining())
	}

	f := &File{
		Version:   version,
		KV:        make([]KeyValue, 0, nKV),
		Tensors:   make([]TensorInfo, 0, nT),
		Alignment: DefaultAlignment,
		Size:      size,
		r:         r,
		kvIdx:     make(map[string]int, nKV),
		tensIdx:   make(map[string]int, nT),
	}
	for i := range nKV {
		key, err := d.str("metadata key")
		if err != nil {
			return nil, fmt.Errorf("metadata entry %d: %w", i, err)
		}
		if _, dup := f.kvIdx[key]; dup {
			return nil, formatErr("metadata entry %d: duplicate key %q", i, key)
		}
		vt, err := d.u32("value type")
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", key, err)
		}
		v, err := d.value(ValueType(vt), 0)
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", key, err)
		}
		f.kvIdx[key] = len(f.KV)
		f.KV = append(f.KV, KeyValue{Key: key, Type: ValueType(vt), Value: v})
	}

	if v, ok := f.Get(KeyAlignment); ok {
		a, ok := asUint(v)
		if !ok || a == 0 || a&(a-1) != 0 || a > 1<<30 {
			return nil, formatErr("metadata %q: alignment %v is not a power of two in [1, 2^30]", KeyAlignment, v)
		}
		f.Alignment = int64(a)
	}

	for i := range nT {
		ti, err := d.tensorInfo()
		if err != nil {
			if ti.Name != "" {
				return nil, fmt.Errorf("tensor %d (%q): %w", i, ti.Name, err)
			}
			return nil, fmt.Errorf("tensor %d: %w", i, err)
		}
		if _, dup := f.tensIdx[ti.Name]; dup {
			return nil, formatErr("tensor %d: duplicate tensor name %q", i, ti.Name)
		}
		f.tensIdx[ti.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, ti)
	}

	// The data section starts at the next multiple of the alignment.
	if d.off > math.MaxInt64-f.Alignment {
		return nil, formatErr("data offset overflows")
	}
	f.DataOffset = alignUp(d.off, f.Alignment)
	for i, ti := range f.Tensors {
		if ti.Offset%uint64(f.Alignment) != 0 {
			return nil, formatErr("tensor %d (%q): offset %d is not a multiple of the alignment %d", i, ti.Name, ti.Offset, f.Alignment)
		}
		nb, _ := tensorBytes(ti.Dims, ti.Type) // validated in tensorInfo
		avail := uint64(0)
		if f.DataOffset <= size {
			avail = uint64(size - f.DataOffset)
		}
		if ti.Offset > avail || nb > avail-ti.Offset {
			return nil, formatErr("tensor %d (%q): data [%d, +%d) beyond the %d-byte data section at byte %d",
				i, ti.Name, ti.Offset, nb, avail, f.DataOffset)
		}
	}
	return f, nil
}

func alignUp(off, a int64) int64 { return (off + a - 1) / a * a }

// tensorInfo reads one tensor info and validates its dims and type.
func (d *decoder) tensorInfo() (TensorInfo, error) {
	var ti TensorInfo
	name, err := d.str("tensor name")
	if err != nil {
		return ti, err
	}
	ti.Name = name
	nd, err := d.u32("dimension count")
	if err != nil {
		return ti, err
	}
	if nd == 0 || nd > MaxDims {
		return ti, formatErr("%d dimensions (want 1 to %d)", nd, MaxDims)
	}
	ti.Dims = make([]uint64, nd)
	for j := range ti.Dims {
		if d.wide {
			ti.Dims[j], err = d.u64("dimension")
		} else {
			var v uint32
			v, err = d.u32("dimension")
			ti.Dims[j] = uint64(v)
		}
		if err != nil {
			return ti, err
		}
		if ti.Dims[j] == 0 || ti.Dims[j] > math.MaxInt64 {
			return ti, formatErr("dimension %d is %d", j, ti.Dims[j])
		}
	}
	tt, err := d.u32("tensor type")
	if err != nil {
		return ti, err
	}
	ti.Type = TensorType(tt)
	if ti.Offset, err = d.u64("tensor offset"); err != nil {
		return ti, err
	}
	tr, ok := tensorTypes[ti.Type]
	if !ok {
		return ti, fmt.Errorf("unknown ggml tensor type %d: %w", tt, ErrUnsupported)
	}
	n, ok := numElements(ti.Dims)
	if !ok || n > math.MaxInt64 {
		return ti, formatErr("dims %v overflow the element count", ti.Dims)
	}
	if ti.Dims[0]%tr.blockSize != 0 {
		return ti, formatErr("type %v needs the innermost dimension (%d) to be a multiple of %d", ti.Type, ti.Dims[0], tr.blockSize)
	}
	if nb, ok := tensorBytes(ti.Dims, ti.Type); !ok || nb > math.MaxInt64 {
		return ti, formatErr("dims %v of type %v overflow the byte size", ti.Dims, ti.Type)
	}
	return ti, nil
}

// TensorBytes returns the raw encoded bytes of the named tensor.
func (f *File) TensorBytes(name string) ([]byte, error) {
	ti, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("gguf: tensor %q not found", name)
	}
	return f.rawBytes(ti)
}

func (f *File) rawBytes(ti TensorInfo) ([]byte, error) {
	if f.r == nil {
		return nil, fmt.Errorf("gguf: tensor %q: file not open", ti.Name)
	}
	nb := ti.Bytes() // bounded by the file size at parse time
	if nb < 0 || f.DataOffset+int64(ti.Offset) > f.Size-nb {
		return nil, fmt.Errorf("gguf: tensor %q: data out of bounds: %w", ti.Name, ErrFormat)
	}
	b := make([]byte, nb)
	if err := readFull(f.r, b, f.DataOffset+int64(ti.Offset)); err != nil {
		return nil, fmt.Errorf("gguf: tensor %q: %w", ti.Name, err)
	}
	return b, nil
}

// ReadTensor reads the named tensor and decodes it to float32, row-major,
// with shape outermost first. Types other than F32, F16, BF16 and Q8_0 give
// an error wrapping ErrUnsupported.
func (f *File) ReadTensor(name string) (data []float32, shape []int, err error) {
	ti, ok := f.Tensor(name)
	if !ok {
		return nil, nil, fmt.Errorf("gguf: tensor %q not found", name)
	}
	if !ti.Type.Decodable() {
		return nil, nil, fmt.Errorf("gguf: tensor %q: type %v: %w", name, ti.Type, ErrUnsupported)
	}
	raw, err := f.rawBytes(ti)
	if err != nil {
		return nil, nil, err
	}
	data, err = Decode(ti.Type, raw, ti.NumElements())
	if err != nil {
		return nil, nil, fmt.Errorf("gguf: tensor %q: %w", name, err)
	}
	return data, ti.Shape(), nil
}

// Decode converts n elements of encoded tensor data of type t to float32.
func Decode(t TensorType, raw []byte, n int64) ([]float32, error) {
	want, ok := tensorBytes([]uint64{uint64(max(n, 0))}, t)
	if n < 0 || !ok || uint64(len(raw)) != want {
		return nil, formatErr("type %v: %d bytes do not hold %d elements", t, len(raw), n)
	}
	le := binary.LittleEndian
	out := make([]float32, n)
	switch t {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
	case F16:
		for i := range out {
			out[i] = dtype.F16ToF32(le.Uint16(raw[2*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = dtype.BF16ToF32(le.Uint16(raw[2*i:]))
		}
	case Q8_0:
		// Blocks of 32: fp16 scale d, then 32 int8 quants q; x = d·q.
		for b := 0; b < len(out)/32; b++ {
			blk := raw[34*b : 34*b+34]
			scale := dtype.F16ToF32(le.Uint16(blk))
			for j := range 32 {
				out[32*b+j] = scale * float32(int8(blk[2+j]))
			}
		}
	default:
		return nil, fmt.Errorf("type %v: %w", t, ErrUnsupported)
	}
	return out, nil
}
