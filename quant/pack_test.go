package quant

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestPackRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, bits := range []int{2, 3, 4, 8} {
		for _, n := range []int{0, 1, 2, 3, 5, 7, 8, 9, 13, 31, 64, 101} {
			codes := make([]uint8, n)
			for i := range codes {
				codes[i] = uint8(rng.IntN(1 << bits))
			}
			packed, err := Pack(codes, bits)
			if err != nil {
				t.Fatalf("bits %d n %d: %v", bits, n, err)
			}
			if want := (n*bits + 7) / 8; len(packed) != want {
				t.Fatalf("bits %d n %d: %d bytes, want %d", bits, n, len(packed), want)
			}
			got := make([]uint8, n)
			if err := Unpack(got, packed, bits); err != nil {
				t.Fatalf("bits %d n %d: %v", bits, n, err)
			}
			if !bytes.Equal(got, codes) {
				t.Fatalf("bits %d n %d: round trip %v, want %v", bits, n, got, codes)
			}
			// Unused high bits of the last byte are zero.
			if used := n * bits % 8; used != 0 && packed[len(packed)-1]>>used != 0 {
				t.Fatalf("bits %d n %d: junk in the last byte %08b", bits, n, packed[len(packed)-1])
			}
		}
	}
}

// The layout is fixed (LSB first): check it by hand.
func TestPackLayout(t *testing.T) {
	cases := []struct {
		bits  int
		codes []uint8
		want  []byte
	}{
		{2, []uint8{1, 2, 3, 0, 3}, []byte{0b00_11_10_01, 0b11}},
		{3, []uint8{5, 3, 7, 1}, []byte{0b11_011_101, 0b001_1}}, // 7 crosses the byte boundary
		{4, []uint8{0xa, 0x5, 0xf}, []byte{0x5a, 0x0f}},
		{8, []uint8{200, 7}, []byte{200, 7}},
	}
	for _, c := range cases {
		got, err := Pack(c.codes, c.bits)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("bits %d: Pack(%v) = %08b, want %08b", c.bits, c.codes, got, c.want)
		}
	}
}

// Appending in pieces gives the same stream as packing everything at once.
func TestAppendPacked(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, bits := range []int{2, 3, 4, 8} {
		var all []uint8
		var stream []byte
		for _, piece := range []int{3, 1, 6, 5, 0, 11, 2} {
			codes := make([]uint8, piece)
			for i := range codes {
				codes[i] = uint8(rng.IntN(1 << bits))
			}
			var err error
			stream, err = AppendPacked(stream, len(all), codes, bits)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, codes...)
		}
		want, _ := Pack(all, bits)
		if !bytes.Equal(stream, want) {
			t.Errorf("bits %d: appended %v, packed %v", bits, stream, want)
		}
	}
	// A reused backing array with junk beyond len must not leak into the stream.
	buf := []byte{0xff, 0xff, 0xff}
	got, err := AppendPacked(buf[:0], 0, []uint8{1, 0, 0, 0, 1}, 2)
	if err != nil || !bytes.Equal(got, []byte{0x01, 0x01}) {
		t.Errorf("reused buffer: %08b, %v", got, err)
	}
}

func TestPackErrors(t *testing.T) {
	if _, err := Pack([]uint8{1}, 5); err == nil {
		t.Error("5-bit pack accepted")
	}
	if _, err := Pack([]uint8{4}, 2); err == nil {
		t.Error("code 4 accepted as 2 bits")
	}
	if err := Unpack(make([]uint8, 9), make([]byte, 3), 3); err == nil {
		t.Error("9 3-bit codes from 3 bytes accepted")
	}
	if err := Unpack(make([]uint8, 1), []byte{0}, 16); err == nil {
		t.Error("16-bit unpack accepted")
	}
	if _, err := AppendPacked([]byte{0}, 3, []uint8{1}, 4); err == nil {
		t.Error("stream length mismatch accepted")
	}
}
