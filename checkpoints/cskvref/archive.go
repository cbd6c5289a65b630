package cskvref

import (
	"archive/zip"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

// recordAlignment is where torch.save places the start of every record's
// bytes (a multiple of 64 from the start of the file), so that torch.load's
// mmap mode can map storages in place. The padding goes into the local
// header's extra field under the tag "FB", as torch's writer does.
const recordAlignment = 64

// archiveVersion is the value of the "version" record: the PyTorch zip
// serialisation format version that torch.save has written since 1.6.
const archiveVersion = "3\n"

// record is one file of the archive, under "<archive>/".
type record struct {
	name string
	data func(w io.Writer) error // writes size bytes
	size uint64
	crc  uint32
}

func bytesRecord(name string, b []byte) record {
	return record{name: name, size: uint64(len(b)), crc: crc32.ChecksumIEEE(b),
		data: func(w io.Writer) error { _, err := w.Write(b); return err }}
}

// float32Record is a storage record: the little-endian bytes of v.
func float32Record(name string, v []float32) record {
	h := crc32.NewIEEE()
	writeFloats(h, v)
	return record{name: name, size: 4 * uint64(len(v)), crc: h.Sum32(),
		data: func(w io.Writer) error { return writeFloats(w, v) }}
}

func writeFloats(w io.Writer, v []float32) error {
	buf := make([]byte, 0, 1<<16)
	for i, x := range v {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
		if len(buf) == cap(buf) || i == len(v)-1 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	return nil
}

// writeArchive writes a PyTorch zip archive: every record stored
// uncompressed under "<archive>/", its bytes aligned to recordAlignment,
// no timestamps (so equal inputs give equal bytes).
func writeArchive(w io.Writer, archive string, records []record) error {
	zw := zip.NewWriter(w)
	var offset uint64 // where the next local header starts
	for _, r := range records {
		name := archive + "/" + r.name
		// Local header: 30 fixed bytes, the name, then the extra field
		// ("FB", uint16 length, padding).
		start := offset + 30 + uint64(len(name)) + 4
		pad := (recordAlignment - start%recordAlignment) % recordAlignment
		extra := make([]byte, 4+pad)
		copy(extra, "FB")
		binary.LittleEndian.PutUint16(extra[2:], uint16(pad))
		for i := 4; i < len(extra); i++ {
			extra[i] = 'Z'
		}
		fw, err := zw.CreateRaw(&zip.FileHeader{
			Name:               name,
			Method:             zip.Store,
			CRC32:              r.crc,
			CompressedSize64:   r.size,
			UncompressedSize64: r.size,
			Extra:              extra,
			ReaderVersion:      20,
			CreatorVersion:     20,
		})
		if err != nil {
			return fmt.Errorf("record %s: %w", name, err)
		}
		if err := r.data(fw); err != nil {
			return fmt.Errorf("record %s: %w", name, err)
		}
		offset = start + pad + r.size
	}
	return zw.Close()
}
