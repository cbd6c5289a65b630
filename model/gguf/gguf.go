package gguf

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
)

// Sentinel errors; every error from this package that concerns a malformed or
// unsupported file wraps one of them.
var (
	// ErrFormat marks a malformed file: bad magic, truncation, lengths or
	// counts beyond the file, bad dims, out-of-bounds or misaligned tensors,
	// duplicate names, unknown value types.
	ErrFormat = errors.New("malformed gguf")
	// ErrUnsupported marks a well-formed feature this package cannot handle:
	// a GGUF version other than 1–3, or a tensor type it cannot decode.
	ErrUnsupported = errors.New("unsupported")
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment used when general.alignment is absent.
const DefaultAlignment = 32

// KeyAlignment is the metadata key that overrides the data alignment.
const KeyAlignment = "general.alignment"

// MaxDims is the largest number of tensor dimensions (GGML_MAX_DIMS).
const MaxDims = 4

// maxNesting bounds how deeply arrays of arrays may nest.
const maxNesting = 8

// ValueType is the type tag of a metadata value.
type ValueType uint32

// Metadata value types, numbered as in the GGUF specification.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"}

func (t ValueType) String() string {
	if int64(t) < int64(len(valueTypeNames)) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// valid reports whether t is a known value type.
func (t ValueType) valid() bool { return t <= TypeFloat64 }

// scalarSize is the encoded size of a fixed-size value type, 0 for string/array.
func (t ValueType) scalarSize() int { return scalars[t].size }

// KeyValue is one metadata entry. Value holds scalars as the matching Go type
// (uint8, int8, uint16, int16, uint32, int32, float32, bool, string, uint64,
// int64, float64). For Type == TypeArray, Value is a typed slice of those
// ([]uint8, …, []string, []bool) or, for arrays of arrays, []any whose
// elements are themselves such slices.
type KeyValue struct {
	Key   string
	Type  ValueType
	Value any
}

// KV builds a KeyValue, taking its Type from the Go type of value. A value of
// an unsupported Go type yields a KeyValue that Write rejects.
func KV(key string, value any) KeyValue {
	t, ok := typeOfValue(value)
	if !ok {
		t = ValueType(math.MaxUint32)
	}
	return KeyValue{Key: key, Type: t, Value: value}
}

// typeOfValue maps a Go value to its GGUF value type.
func typeOfValue(v any) (ValueType, bool) {
	switch v.(type) {
	case uint8:
		return TypeUint8, true
	case int8:
		return TypeInt8, true
	case uint16:
		return TypeUint16, true
	case int16:
		return TypeInt16, true
	case uint32:
		return TypeUint32, true
	case int32:
		return TypeInt32, true
	case float32:
		return TypeFloat32, true
	case bool:
		return TypeBool, true
	case string:
		return TypeString, true
	case uint64:
		return TypeUint64, true
	case int64:
		return TypeInt64, true
	case float64:
		return TypeFloat64, true
	case []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32, []bool,
		[]string, []uint64, []int64, []float64, []any:
		return TypeArray, true
	}
	return 0, false
}

// elemTypeOfSlice maps a Go slice to the element type of the GGUF array.
func elemTypeOfSlice(v any) (ValueType, bool) {
	switch v.(type) {
	case []uint8:
		return TypeUint8, true
	case []int8:
		return TypeInt8, true
	case []uint16:
		return TypeUint16, true
	case []int16:
		return TypeInt16, true
	case []uint32:
		return TypeUint32, true
	case []int32:
		return TypeInt32, true
	case []float32:
		return TypeFloat32, true
	case []bool:
		return TypeBool, true
	case []string:
		return TypeString, true
	case []uint64:
		return TypeUint64, true
	case []int64:
		return TypeInt64, true
	case []float64:
		return TypeFloat64, true
	case []any:
		return TypeArray, true
	}
	return 0, false
}

// TensorType is a ggml tensor element type.
type TensorType uint32

// ggml tensor types, numbered as in ggml.h. Ids 4, 5 and 31–33, 36–38 were
// removed from ggml and are not valid in GGUF files.
const (
	F32     TensorType = 0
	F16     TensorType = 1
	Q4_0    TensorType = 2
	Q4_1    TensorType = 3
	Q5_0    TensorType = 6
	Q5_1    TensorType = 7
	Q8_0    TensorType = 8
	Q8_1    TensorType = 9
	Q2_K    TensorType = 10
	Q3_K    TensorType = 11
	Q4_K    TensorType = 12
	Q5_K    TensorType = 13
	Q6_K    TensorType = 14
	Q8_K    TensorType = 15
	IQ2_XXS TensorType = 16
	IQ2_XS  TensorType = 17
	IQ3_XXS TensorType = 18
	IQ1_S   TensorType = 19
	IQ4_NL  TensorType = 20
	IQ3_S   TensorType = 21
	IQ2_S   TensorType = 22
	IQ4_XS  TensorType = 23
	I8      TensorType = 24
	I16     TensorType = 25
	I32     TensorType = 26
	I64     TensorType = 27
	F64     TensorType = 28
	IQ1_M   TensorType = 29
	BF16    TensorType = 30
	TQ1_0   TensorType = 34
	TQ2_0   TensorType = 35
	MXFP4   TensorType = 39
)

// typeTraits gives, per ggml type, the name, the number of elements per block
// and the encoded bytes per block (from ggml-common.h).
type typeTraits struct {
	name      string
	blockSize uint64
	typeSize  uint64
}

var tensorTypes = map[TensorType]typeTraits{
	F32:     {"F32", 1, 4},
	F16:     {"F16", 1, 2},
	Q4_0:    {"Q4_0", 32, 18},
	Q4_1:    {"Q4_1", 32, 20},
	Q5_0:    {"Q5_0", 32, 22},
	Q5_1:    {"Q5_1", 32, 24},
	Q8_0:    {"Q8_0", 32, 34},
	Q8_1:    {"Q8_1", 32, 36},
	Q2_K:    {"Q2_K", 256, 84},
	Q3_K:    {"Q3_K", 256, 110},
	Q4_K:    {"Q4_K", 256, 144},
	Q5_K:    {"Q5_K", 256, 176},
	Q6_K:    {"Q6_K", 256, 210},
	Q8_K:    {"Q8_K", 256, 292},
	IQ2_XXS: {"IQ2_XXS", 256, 66},
	IQ2_XS:  {"IQ2_XS", 256, 74},
	IQ3_XXS: {"IQ3_XXS", 256, 98},
	IQ1_S:   {"IQ1_S", 256, 50},
	IQ4_NL:  {"IQ4_NL", 32, 18},
	IQ3_S:   {"IQ3_S", 256, 110},
	IQ2_S:   {"IQ2_S", 256, 82},
	IQ4_XS:  {"IQ4_XS", 256, 136},
	I8:      {"I8", 1, 1},
	I16:     {"I16", 1, 2},
	I32:     {"I32", 1, 4},
	I64:     {"I64", 1, 8},
	F64:     {"F64", 1, 8},
	IQ1_M:   {"IQ1_M", 256, 56},
	BF16:    {"BF16", 1, 2},
	TQ1_0:   {"TQ1_0", 256, 54},
	TQ2_0:   {"TQ2_0", 256, 66},
	MXFP4:   {"MXFP4", 32, 17},
}

func (t TensorType) String() string {
	if tr, ok := tensorTypes[t]; ok {
		return tr.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Known reports whether t is a ggml type whose block layout this package knows
// (all of them parse; only F32, F16, BF16 and Q8_0 decode).
func (t TensorType) Known() bool { _, ok := tensorTypes[t]; return ok }

// BlockSize is the number of elements per quantisation block (1 for plain
// types, 0 for unknown types).
func (t TensorType) BlockSize() int { return int(tensorTypes[t].blockSize) }

// Decodable reports whether ReadTensor can decode tensors of type t.
func (t TensorType) Decodable() bool {
	switch t {
	case F32, F16, BF16, Q8_0:
		return true
	}
	return false
}

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name   string
	Dims   []uint64 // ggml order, innermost first
	Type   TensorType
	Offset uint64 // relative to File.DataOffset
}

// Shape returns the row-major shape, outermost first (Dims reversed).
func (ti TensorInfo) Shape() []int {
	s := make([]int, len(ti.Dims))
	for i, d := range ti.Dims {
		s[len(ti.Dims)-1-i] = int(d)
	}
	return s
}

// NumElements is the product of the dims, or -1 if it overflows int64.
func (ti TensorInfo) NumElements() int64 {
	n, ok := numElements(ti.Dims)
	if !ok || n > math.MaxInt64 {
		return -1
	}
	return int64(n)
}

// Bytes is the encoded size of the tensor data, or -1 for an unknown type, an
// element count that is not a whole number of blocks, or overflow.
func (ti TensorInfo) Bytes() int64 {
	n, ok := tensorBytes(ti.Dims, ti.Type)
	if !ok || n > math.MaxInt64 {
		return -1
	}
	return int64(n)
}

func numElements(dims []uint64) (uint64, bool) {
	n := uint64(1)
	for _, d := range dims {
		hi, lo := bits.Mul64(n, d)
		if hi != 0 {
			return 0, false
		}
		n = lo
	}
	return n, true
}

func tensorBytes(dims []uint64, t TensorType) (uint64, bool) {
	tr, ok := tensorTypes[t]
	if !ok {
		return 0, false
	}
	n, ok := numElements(dims)
	if !ok || n%tr.blockSize != 0 {
		return 0, false
	}
	hi, lo := bits.Mul64(n/tr.blockSize, tr.typeSize)
	if hi != 0 {
		return 0, false
	}
	return lo, true
}

// File is a parsed GGUF file. Tensor data stays in the file and is read on
// demand by ReadTensor and TensorBytes, which are safe for concurrent use
// (they only call ReadAt); Close must not race with them.
type File struct {
	Path       string // empty for Parse
	Version    uint32
	KV         []KeyValue   // in file order
	Tensors    []TensorInfo // in file order
	DataOffset int64        // absolute offset of the data section
	Alignment  int64
	Size       int64 // total input size in bytes

	r       io.ReaderAt
	closer  *os.File
	kvIdx   map[string]int
	tensIdx map[string]int
}

// Get returns the raw value of a metadata key.
func (f *File) Get(key string) (any, bool) {
	i, ok := f.kvIdx[key]
	if !ok {
		return nil, false
	}
	return f.KV[i].Value, true
}

// String returns a string metadata value.
func (f *File) String(key string) (string, bool) {
	v, _ := f.Get(key)
	s, ok := v.(string)
	return s, ok
}

// Uint returns an integer metadata value of any integer type; negative values
// and non-integers report false.
func (f *File) Uint(key string) (uint64, bool) {
	v, _ := f.Get(key)
	return asUint(v)
}

func asUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case int8:
		return uint64(x), x >= 0
	case int16:
		return uint64(x), x >= 0
	case int32:
		return uint64(x), x >= 0
	case int64:
		return uint64(x), x >= 0
	}
	return 0, false
}

func asInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	}
	u, ok := asUint(v)
	if !ok || u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

// Float returns a float metadata value; f32, f64 and integer types convert.
func (f *File) Float(key string) (float64, bool) {
	v, _ := f.Get(key)
	return AsFloat(v)
}

// AsFloat converts a metadata value (KeyValue.Value) of a float or integer
// type to float64; other types report false.
func AsFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	if i, ok := asInt64(v); ok {
		return float64(i), true
	}
	if u, ok := asUint(v); ok {
		return float64(u), true
	}
	return 0, false
}

// Strings returns a copy of a string array.
func (f *File) Strings(key string) ([]string, bool) {
	v, _ := f.Get(key)
	s, ok := v.([]string)
	if !ok {
		return nil, false
	}
	return append([]string(nil), s...), true
}

// Float32s returns a copy of a float array (f32, or f64 converted).
func (f *File) Float32s(key string) ([]float32, bool) {
	v, _ := f.Get(key)
	switch x := v.(type) {
	case []float32:
		return append([]float32(nil), x...), true
	case []float64:
		out := make([]float32, len(x))
		for i, e := range x {
			out[i] = float32(e)
		}
		return out, true
	}
	return nil, false
}

// Int32s returns an integer array (of any integer element type) as int32;
// it reports false if any element is out of the int32 range.
func (f *File) Int32s(key string) ([]int32, bool) {
	v, _ := f.Get(key)
	switch x := v.(type) {
	case []int32:
		return append([]int32(nil), x...), true
	case []uint8:
		return convInt32(x)
	case []int8:
		return convInt32(x)
	case []uint16:
		return convInt32(x)
	case []int16:
		return convInt32(x)
	case []uint32:
		return convInt32(x)
	case []uint64:
		return convInt32(x)
	case []int64:
		return convInt32(x)
	}
	return nil, false
}

func convInt32[T uint8 | int8 | uint16 | int16 | uint32 | uint64 | int64](x []T) ([]int32, bool) {
	out := make([]int32, len(x))
	for i, e := range x {
		v := int32(e)
		if T(v) != e || (v < 0) != (e < 0) {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}

// Tensor returns the info of the named tensor.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.tensIdx[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// Close releases the file opened by Open; it is a no-op for Parse.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	err := f.closer.Close()
	f.closer = nil
	return err
}
