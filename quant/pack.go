package quant

import "fmt"

// Codes are packed into a little-endian bit stream: code i occupies bits
// [i·b, (i+1)·b) of the stream, where bit k is bit k%8 of byte k/8 (least
// significant first). 3-bit codes cross byte boundaries. n codes take
// PackedLen(n, b) = ceil(n·b/8) bytes, and the unused high bits of the last
// byte are zero.

// PackedLen is the number of bytes n codes of the given width occupy.
func PackedLen(n, bits int) int { return (n*bits + 7) / 8 }

func checkBits(bits int) error {
	switch bits {
	case 2, 3, 4, 8:
		return nil
	}
	return fmt.Errorf("quant: cannot pack %d-bit codes (want 2, 3, 4 or 8)", bits)
}

// Pack packs codes (each < 2^bits) into PackedLen(len(codes), bits) bytes.
func Pack(codes []uint8, bits int) ([]byte, error) {
	return AppendPacked(nil, 0, codes, bits)
}

// AppendPacked appends codes to a stream dst that already holds n codes of the
// same width (len(dst) must be PackedLen(n, bits)) and returns the extended
// stream, which holds n + len(codes) codes in PackedLen(n+len(codes), bits)
// bytes. This is how the cache grows its compressed branch without padding.
func AppendPacked(dst []byte, n int, codes []uint8, bits int) ([]byte, error) {
	if err := checkBits(bits); err != nil {
		return dst, err
	}
	if n < 0 || len(dst) != PackedLen(n, bits) {
		return dst, fmt.Errorf("quant: append to a stream of %d bytes said to hold %d %d-bit codes (want %d bytes)", len(dst), n, bits, PackedLen(n, bits))
	}
	limit := uint8(int(1)<<bits - 1)
	for i, c := range codes {
		if c > limit {
			return dst, fmt.Errorf("quant: code %d at index %d does not fit in %d bits", c, i, bits)
		}
	}
	total := n + len(codes)
	need := PackedLen(total, bits)
	if cap(dst) >= need {
		dst = dst[:need]
	} else {
		grown := make([]byte, need, need+need/4)
		copy(grown, dst)
		dst = grown
	}
	clear(dst[PackedLen(n, bits):]) // fresh bytes start at zero (a reused tail may hold junk)
	if bits == 8 {
		copy(dst[n:], codes)
		return dst, nil
	}
	pos := n * bits
	for _, c := range codes {
		byteIdx, shift := pos>>3, uint(pos&7)
		v := uint16(c) << shift
		dst[byteIdx] |= byte(v)
		if shift+uint(bits) > 8 {
			dst[byteIdx+1] |= byte(v >> 8)
		}
		pos += bits
	}
	return dst, nil
}

// Unpack reads len(dst) codes of the given width from the start of packed.
func Unpack(dst []uint8, packed []byte, bits int) error {
	if err := checkBits(bits); err != nil {
		return err
	}
	if need := PackedLen(len(dst), bits); len(packed) < need {
		return fmt.Errorf("quant: unpack %d %d-bit codes: %d bytes, need %d", len(dst), bits, len(packed), need)
	}
	if bits == 8 {
		copy(dst, packed)
		return nil
	}
	mask := uint16(1)<<bits - 1
	pos := 0
	for i := range dst {
		byteIdx, shift := pos>>3, uint(pos&7)
		v := uint16(packed[byteIdx])
		if shift+uint(bits) > 8 {
			v |= uint16(packed[byteIdx+1]) << 8
		}
		dst[i] = uint8((v >> shift) & mask)
		pos += bits
	}
	return nil
}
