package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/cskv/cskv/atomicfile"
	"github.com/cskv/cskv/model/dtype"
)

// WriteTensor is one tensor to write.
type WriteTensor struct {
	Name  string
	Shape []int      // row-major, outermost first; 1 to 4 dims
	Type  TensorType // F32, F16, BF16 or Q8_0
	Data  []float32  // row-major, product(Shape) values
}

// Write writes a GGUF file of the given version (1, 2 or 3) with the metadata
// kv (in order) and tensors (in order), atomically: a temporary file in the
// same directory is written, synced and renamed over path. The alignment is
// general.alignment (which must then be a uint32 power of two) when kv holds
// it, else 32. Each KeyValue's Value must have the Go type that matches its
// Type (see KeyValue; KV builds one). Version 1 files may hold the 64-bit value
// types too, which this reader (like llama.cpp's) accepts in any version.
// Q8_0 is quantised as ggml's reference quantiser does.
func Write(path string, version uint32, kv []KeyValue, tensors []WriteTensor) (err error) {
	if version < 1 || version > 3 {
		return fmt.Errorf("gguf: write %s: version %d: %w", path, version, ErrUnsupported)
	}
	head, plan, err := encodeHeader(version, kv, tensors)
	if err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}

	err = atomicfile.WriteFunc(path, func(w io.Writer) error {
		if _, err := w.Write(head); err != nil {
			return err
		}
		pos := int64(len(head))
		for i, t := range tensors {
			if err := writePad(w, plan.dataOffset+plan.offsets[i]-pos); err != nil {
				return err
			}
			pos = plan.dataOffset + plan.offsets[i]
			n, err := encodeTensor(w, t)
			if err != nil {
				return fmt.Errorf("tensor %q: %w", t.Name, err)
			}
			pos += n
		}
		return writePad(w, alignUp(pos, plan.alignment)-pos)
	})
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	return nil
}

func writePad(w io.Writer, n int64) error {
	var zero [64]byte
	for n > 0 {
		k := min(n, int64(len(zero)))
		if _, err := w.Write(zero[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

type writePlan struct {
	alignment  int64
	dataOffset int64
	offsets    []int64 // per tensor, relative to dataOffset
}

// encoder appends GGUF encodings to a byte slice.
type encoder struct {
	b    []byte
	wide bool
}

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }

func (e *encoder) length(n int, what string) error {
	if !e.wide {
		if uint64(n) > math.MaxUint32 {
			return fmt.Errorf("%s %d does not fit GGUF v1's uint32", what, n)
		}
		e.u32(uint32(n))
		return nil
	}
	e.u64(uint64(n))
	return nil
}

func (e *encoder) str(s string) error {
	if err := e.length(len(s), "string length"); err != nil {
		return err
	}
	e.b = append(e.b, s...)
	return nil
}

// value encodes v, which must have the Go type of t.
func (e *encoder) value(t ValueType, v any, depth int) error {
	gt, ok := typeOfValue(v)
	if !ok {
		return fmt.Errorf("unsupported Go type %T", v)
	}
	if gt != t {
		return fmt.Errorf("value of Go type %T does not match type %v", v, t)
	}
	switch x := v.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case bool:
		if x {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case string:
		return e.str(x)
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	default:
		return e.array(v, depth+1)
	}
	return nil
}

func (e *encoder) array(v any, depth int) error {
	if depth > maxNesting {
		return fmt.Errorf("arrays nested deeper than %d", maxNesting)
	}
	et, _ := elemTypeOfSlice(v)
	e.u32(uint32(et))
	switch x := v.(type) {
	case []uint8:
		return appendScalars(e, x, func(v uint8) { e.u8(v) })
	case []int8:
		return appendScalars(e, x, func(v int8) { e.u8(uint8(v)) })
	case []uint16:
		return appendScalars(e, x, e.u16)
	case []int16:
		return appendScalars(e, x, func(v int16) { e.u16(uint16(v)) })
	case []uint32:
		return appendScalars(e, x, e.u32)
	case []int32:
		return appendScalars(e, x, func(v int32) { e.u32(uint32(v)) })
	case []float32:
		return appendScalars(e, x, func(v float32) { e.u32(math.Float32bits(v)) })
	case []bool:
		return appendScalars(e, x, func(v bool) {
			if v {
				e.u8(1)
			} else {
				e.u8(0)
			}
		})
	case []uint64:
		return appendScalars(e, x, e.u64)
	case []int64:
		return appendScalars(e, x, func(v int64) { e.u64(uint64(v)) })
	case []float64:
		return appendScalars(e, x, func(v float64) { e.u64(math.Float64bits(v)) })
	case []string:
		if err := e.length(len(x), "array length"); err != nil {
			return err
		}
		for _, s := range x {
			if err := e.str(s); err != nil {
				return err
			}
		}
		return nil
	case []any:
		if err := e.length(len(x), "array length"); err != nil {
			return err
		}
		for i, el := range x {
			if _, ok := elemTypeOfSlice(el); !ok {
				return fmt.Errorf("nested array element %d: Go type %T is not an array", i, el)
			}
			if err := e.array(el, depth+1); err != nil {
				return fmt.Errorf("nested array element %d: %w", i, err)
			}
		}
		return nil
	}
	return fmt.Errorf("unsupported array Go type %T", v)
}

func appendScalars[T any](e *encoder, x []T, put func(T)) error {
	if err := e.length(len(x), "array length"); err != nil {
		return err
	}
	for _, v := range x {
		put(v)
	}
	return nil
}

// encodeHeader validates the inputs and encodes everything before the data
// section, padding included.
func encodeHeader(version uint32, kv []KeyValue, tensors []WriteTensor) ([]byte, writePlan, error) {
	plan := writePlan{alignment: DefaultAlignment, offsets: make([]int64, len(tensors))}
	e := &encoder{wide: version >= 2}
	e.b = append(e.b, Magic...)
	e.u32(version)
	if err := e.length(len(tensors), "tensor count"); err != nil {
		return nil, plan, err
	}
	if err := e.length(len(kv), "metadata count"); err != nil {
		return nil, plan, err
	}
	seen := make(map[string]bool, len(kv))
	for _, p := range kv {
		if seen[p.Key] {
			return nil, plan, fmt.Errorf("duplicate metadata key %q", p.Key)
		}
		seen[p.Key] = true
		if p.Key == KeyAlignment { // llama.cpp requires a u32 power of two
			a, ok := p.Value.(uint32)
			if !ok || p.Type != TypeUint32 || a == 0 || a&(a-1) != 0 || a > 1<<30 {
				return nil, plan, fmt.Errorf("metadata %q: alignment %v (%T) is not a uint32 power of two in [1, 2^30]", p.Key, p.Value, p.Value)
			}
			plan.alignment = int64(a)
		}
		if err := e.str(p.Key); err != nil {
			return nil, plan, fmt.Errorf("metadata %q: %w", p.Key, err)
		}
		e.u32(uint32(p.Type))
		if err := e.value(p.Type, p.Value, 0); err != nil {
			return nil, plan, fmt.Errorf("metadata %q: %w", p.Key, err)
		}
	}
	names := make(map[string]bool, len(tensors))
	var off int64
	for i, t := range tensors {
		if names[t.Name] {
			return nil, plan, fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		names[t.Name] = true
		nb, err := checkWriteTensor(t, version)
		if err != nil {
			return nil, plan, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if err := e.str(t.Name); err != nil {
			return nil, plan, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		e.u32(uint32(len(t.Shape)))
		for j := len(t.Shape) - 1; j >= 0; j-- { // ggml order: innermost first
			if e.wide {
				e.u64(uint64(t.Shape[j]))
			} else {
				e.u32(uint32(t.Shape[j]))
			}
		}
		e.u32(uint32(t.Type))
		e.u64(uint64(off))
		plan.offsets[i] = off
		off = alignUp(off+nb, plan.alignment)
	}
	plan.dataOffset = alignUp(int64(len(e.b)), plan.alignment)
	e.b = append(e.b, make([]byte, plan.dataOffset-int64(len(e.b)))...)
	return e.b, plan, nil
}

// checkWriteTensor validates a tensor and returns its encoded size.
func checkWriteTensor(t WriteTensor, version uint32) (int64, error) {
	switch t.Type {
	case F32, F16, BF16, Q8_0:
	default:
		return 0, fmt.Errorf("writing type %v: %w", t.Type, ErrUnsupported)
	}
	if len(t.Shape) < 1 || len(t.Shape) > MaxDims {
		return 0, fmt.Errorf("%d dimensions (want 1 to %d)", len(t.Shape), MaxDims)
	}
	dims := make([]uint64, len(t.Shape))
	for j, s := range t.Shape {
		if s <= 0 || (version == 1 && uint64(s) > math.MaxUint32) {
			return 0, fmt.Errorf("shape %v: bad dimension %d", t.Shape, s)
		}
		dims[len(t.Shape)-1-j] = uint64(s)
	}
	n, ok := numElements(dims)
	if !ok || n != uint64(len(t.Data)) {
		return 0, fmt.Errorf("shape %v does not match %d values", t.Shape, len(t.Data))
	}
	if bs := uint64(t.Type.BlockSize()); dims[0]%bs != 0 {
		return 0, fmt.Errorf("type %v needs the last shape dimension (%d) to be a multiple of %d", t.Type, dims[0], bs)
	}
	nb, ok := tensorBytes(dims, t.Type)
	if !ok || nb > math.MaxInt64/2 {
		return 0, errors.New("tensor too large")
	}
	return int64(nb), nil
}

// encodeTensor writes t.Data in t.Type and returns the bytes written.
func encodeTensor(w io.Writer, t WriteTensor) (int64, error) {
	var total int64
	const step = 1 << 14 // elements per chunk; a multiple of 32
	buf := make([]byte, 0, 4*step)
	le := binary.LittleEndian
	for s := 0; s < len(t.Data); s += step {
		x := t.Data[s:min(s+step, len(t.Data))]
		buf = buf[:0]
		switch t.Type {
		case F32:
			for _, v := range x {
				buf = le.AppendUint32(buf, math.Float32bits(v))
			}
		case F16:
			for _, v := range x {
				buf = le.AppendUint16(buf, dtype.F32ToF16(v))
			}
		case BF16:
			for _, v := range x {
				buf = le.AppendUint16(buf, dtype.F32ToBF16(v))
			}
		case Q8_0:
			var err error
			if buf, err = quantizeQ8_0(buf, x, s); err != nil {
				return total, err
			}
		}
		n, err := w.Write(buf)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// quantizeQ8_0 appends the Q8_0 blocks of x (len a multiple of 32), as ggml's
// reference quantiser does: d = max|x|/127, q = round(x/d), d stored as fp16.
func quantizeQ8_0(buf []byte, x []float32, base int) ([]byte, error) {
	for b := 0; b < len(x); b += 32 {
		blk := x[b : b+32]
		var amax float32
		for j, v := range blk {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return buf, fmt.Errorf("non-finite value at index %d cannot be quantised to Q8_0", base+b+j)
			}
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		buf = binary.LittleEndian.AppendUint16(buf, dtype.F32ToF16(d))
		for _, v := range blk {
			q := math.Round(float64(v * id))
			q = max(-127, min(127, q))
			buf = append(buf, byte(int8(q)))
		}
	}
	return buf, nil
}
