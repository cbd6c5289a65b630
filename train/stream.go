package train

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/cskv/cskv/model"
)

// advanceTokens bounds the tokens that go through a block at once when the
// hidden states advance (the block's temporary buffers): advanceGroup(T)
// sequences, at most 8 (every T ≤ 512 keeps 8), at least one.
const advanceTokens = 4096

func advanceGroup(T int) int { return max(1, min(8, advanceTokens/max(T, 1))) }

// scanBytes is the size of the row chunks (of the residual stream and of
// the attention inputs) in which a layer's streaming pass reads a stream
// (scanRows); a variable so that tests can force many chunks.
var scanBytes = 64 << 20

// scanRows is the rows per chunk of a streaming pass for width d: scanBytes
// of float32, a multiple of statsChunkRows (so that Stats accumulates
// exactly as in one call), at least statsChunkRows.
func scanRows(d int) int {
	return max(1, scanBytes/(4*d*statsChunkRows)) * statsChunkRows
}

// stream is the residual stream of a set of sequences as it moves through the
// frozen model, one layer at a time: held in memory, or spilled to a file
// read and written in chunks (pread/pwrite, so that only the chunk in use is
// resident; a memory map's pages would count in the process's memory). The
// file holds the float32 values bit for bit: both give the same results.
type stream struct {
	h    []float32 // (nSeq·T, D) in memory; nil when spilled
	file *os.File  // spilled: (nSeq·T, D) float32, row-major, native byte order; nil in memory
	nSeq int
	T, D int
	rope *model.RopeTable
	buf  []float32 // spilled: scratch for the rows read (view)
}

// newStream embeds the sequences (all of the same length), in memory when
// spill is "" and otherwise into a new file at path spill, which is
// unlinked at once (it disappears with the process, however it ends).
func newStream(m *model.Model, seqs [][]int, spill string) (*stream, error) {
	c := m.Config
	s := &stream{nSeq: len(seqs), D: c.Hidden}
	if len(seqs) == 0 {
		return s, nil
	}
	s.T = len(seqs[0])
	r, err := c.Rope()
	if err != nil {
		return nil, err
	}
	s.rope = model.NewRopeTable(s.T, r)
	if spill == "" {
		s.h = make([]float32, len(seqs)*s.T*c.Hidden)
	} else {
		if s.file, err = os.OpenFile(spill, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
			return nil, fmt.Errorf("spilling the residual stream: %w", err)
		}
		if err := os.Remove(spill); err != nil {
			s.close()
			return nil, fmt.Errorf("spilling the residual stream: %w", err)
		}
	}
	row := make([]float32, s.T*c.Hidden) // (T, D)
	for i, seq := range seqs {
		v := s.view(i*s.T, s.T, row)
		if err := m.EmbedTokens(v, seq); err != nil {
			s.close()
			return nil, err
		}
		if err := s.put(i*s.T, v); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// rows is nSeq·T.
func (s *stream) rows() int { return s.nSeq * s.T }

// spilled reports whether the stream lives in a file.
func (s *stream) spilled() bool { return s.file != nil }

// view returns rows r0 … r0+n−1 (n, D): in memory the stream's own slice,
// spilled a copy read into buf (len ≥ n·D). Write a changed view back with
// put.
func (s *stream) view(r0, n int, buf []float32) []float32 {
	if !s.spilled() {
		return s.h[r0*s.D : (r0+n)*s.D]
	}
	return buf[:n*s.D]
}

// read returns rows r0 … r0+n−1 (n, D) as view does, with their values.
func (s *stream) read(r0, n int, buf []float32) ([]float32, error) {
	v := s.view(r0, n, buf)
	if !s.spilled() {
		return v, nil
	}
	if _, err := s.file.ReadAt(f32Bytes(v), int64(r0)*int64(s.D)*4); err != nil {
		return nil, fmt.Errorf("reading the spilled residual stream %s: %w", s.file.Name(), err)
	}
	return v, nil
}

// put stores v (n, D), a view of rows r0 … r0+n−1.
func (s *stream) put(r0 int, v []float32) error {
	if !s.spilled() {
		return nil // v is the stream itself
	}
	if _, err := s.file.WriteAt(f32Bytes(v), int64(r0)*int64(s.D)*4); err != nil {
		return fmt.Errorf("writing the spilled residual stream %s: %w", s.file.Name(), err)
	}
	return nil
}

// scratch returns s.buf with room for n rows (spilled streams only).
func (s *stream) scratch(n int) []float32 {
	if !s.spilled() {
		return nil
	}
	if len(s.buf) < n*s.D {
		s.buf = make([]float32, n*s.D)
	}
	return s.buf
}

// close releases the spill file.
func (s *stream) close() error {
	if s == nil || s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	return err
}

// attnInput returns X = RMSNorm(h) (nSeq·T, D) of every row: the
// attention inputs of the held-out sequences (H·T rows, like one batch).
func (s *stream) attnInput(c model.Config, blk *model.Block) ([]float32, error) {
	x := make([]float32, s.rows()*s.D)
	v, err := s.read(0, s.rows(), s.scratch(s.rows()))
	if err != nil {
		return nil, err
	}
	blk.AttnInput(c, x, v, s.rows())
	return x, nil
}

// seqInput writes X = RMSNorm(h) (T, D) of sequence i into x.
func (s *stream) seqInput(c model.Config, blk *model.Block, x []float32, i int) error {
	v, err := s.read(i*s.T, s.T, s.scratch(s.T))
	if err != nil {
		return err
	}
	blk.AttnInput(c, x, v, s.T)
	return nil
}

// scan is one streaming pass over the rows in order, in chunks of
// scanRows(D) rows: each(r0, v, x) gets rows r0 … of the stream v (n, D)
// and their attention inputs x = RMSNorm(v) (n, D) (nil when blk is nil).
// Neither is valid after each returns.
func (s *stream) scan(c model.Config, blk *model.Block, each func(r0 int, v, x []float32) error) error {
	chunk := scanRows(s.D)
	var x []float32
	if blk != nil {
		x = make([]float32, min(chunk, s.rows())*s.D)
	}
	for r0 := 0; r0 < s.rows(); r0 += chunk {
		n := min(chunk, s.rows()-r0)
		v, err := s.read(r0, n, s.scratch(n))
		if err != nil {
			return err
		}
		var xc []float32
		if blk != nil {
			xc = x[:n*s.D]
			blk.AttnInput(c, xc, v, n)
		}
		if err := each(r0, v, xc); err != nil {
			return err
		}
	}
	return nil
}

// advance runs the original block over the stream in place, advanceGroup(T)
// sequences at a time.
func (s *stream) advance(c model.Config, blk *model.Block) error {
	defer blk.Freeze()() // in bf16 its weights are rounded once for all groups
	g := advanceGroup(s.T)
	for i := 0; i < s.nSeq; i += g {
		n := min(g, s.nSeq-i)
		v, err := s.read(i*s.T, n*s.T, s.scratch(n*s.T))
		if err != nil {
			return err
		}
		if err := blk.Forward(c, v, n, s.T, s.rope, nil); err != nil {
			return err
		}
		if err := s.put(i*s.T, v); err != nil {
			return err
		}
	}
	return nil
}

// f32Bytes is the memory of v as bytes (the spill file's encoding: the
// machine's float32 bits, written and read by the same process).
func f32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// defaultStreamMemory is the memory the residual streams may take before
// they are spilled when Config.StreamMemory is 0: a quarter of the
// machine's memory (4 GiB where that is unknown).
func defaultStreamMemory() int64 {
	if total := memTotal(); total > 0 {
		return total / 4
	}
	return 4 << 30
}

// openStreams embeds the calibration and held-out sequences into the
// residual streams h (N·T, D) and hHeld (H·T, D): in memory while both fit
// cfg.StreamMemory, otherwise spilled to files in cfg.Out (the temporary
// directory without one).
func openStreams(cfg Config, m *model.Model, calib, held [][]int) (h, hHeld *stream, err error) {
	dir := cfg.Out
	if dir == "" {
		dir = os.TempDir()
	}
	var spill, spillHeld string
	if streamBytes(len(calib)+len(held), cfg.SeqLen, m.Config.Hidden) > cfg.streamMemory() {
		spill, spillHeld = filepath.Join(dir, ".stream-calib.f32"), filepath.Join(dir, ".stream-held.f32")
	}
	if h, err = newStream(m, calib, spill); err != nil {
		return nil, nil, err
	}
	if hHeld, err = newStream(m, held, spillHeld); err != nil {
		h.close()
		return nil, nil, err
	}
	return h, hHeld, nil
}

// streamBytes is the memory of the residual streams of n sequences of T
// tokens at width d.
func streamBytes(n, T, d int) int64 { return int64(n) * int64(T) * int64(d) * 4 }

// streamMemory is StreamMemory, or defaultStreamMemory when it is 0.
func (c Config) streamMemory() int64 {
	if c.StreamMemory > 0 {
		return c.StreamMemory
	}
	return defaultStreamMemory()
}

// readFlat reads elements off … off+len(dst)−1 of the stream (n·D values in
// row-major order) into dst.
func (s *stream) readFlat(dst []float32, off int) error {
	if !s.spilled() {
		copy(dst, s.h[off:off+len(dst)])
		return nil
	}
	if _, err := s.file.ReadAt(f32Bytes(dst), int64(off)*4); err != nil {
		return fmt.Errorf("reading the spilled residual stream %s: %w", s.file.Name(), err)
	}
	return nil
}
