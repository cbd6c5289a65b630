// Package gguf reads and writes GGUF model files, versions 1, 2 and 3.
//
// A GGUF file is a little-endian header ("GGUF", version, tensor count, metadata
// count), a list of typed metadata key/value pairs, a list of tensor infos
// (name, dims, ggml type, offset), and an aligned data section. Version 1 stores
// counts, string lengths, array lengths and tensor dims as uint32; versions 2
// and 3 store them as uint64. The data section begins at the first multiple of
// general.alignment (default 32) after the tensor infos, and every tensor's
// offset is relative to it and a multiple of the alignment.
//
// Tensor dims are stored innermost first (ggml order): a [64, 32] tensor is
// 32 rows of 64 columns. TensorInfo.Dims keeps that order; TensorInfo.Shape and
// ReadTensor use row-major order, outermost first ([32, 64]).
//
// ReadTensor decodes F32, F16, BF16 and Q8_0 to float32; other ggml types parse
// (their sizes are known, so bounds are checked) but reading them fails with an
// error wrapping ErrUnsupported. Malformed files fail with errors wrapping
// ErrFormat; the parser never panics and never allocates more than a small
// multiple of the input size, whatever the header claims.
//
// Write produces version 1, 2 or 3 files (F32, F16, BF16 or Q8_0 tensors)
// atomically: a temporary file in the same directory, fsync, rename.
package gguf
