package data

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Encoder is what the data package needs from a tokenizer.
type Encoder interface {
	Encode(text string) ([]int, error)
	BOS() int
}

// EndOfText is the story separator line of TinyStories-style text files.
const EndOfText = "<|endoftext|>"

// Format is how a data file stores its content.
type Format string

// Supported data formats.
const (
	FormatAuto Format = "auto" // by extension: .bin → bin, .ids/.tokens → ids, else text
	FormatText Format = "text" // UTF-8 text, stories separated by "<|endoftext|>" lines
	FormatIDs  Format = "ids"  // whitespace-separated decimal token ids
	FormatBin  Format = "bin"  // llm.c token file: 256 int32 header, then uint16 (v1) or uint32 (v2) ids
)

// extFormats maps file extensions to formats for FormatAuto.
var extFormats = map[string]Format{".bin": FormatBin, ".ids": FormatIDs, ".tokens": FormatIDs}

// llm.c header constants.
const (
	binMagic      = 20240520
	binHeaderInts = 256
)

// binVersions maps llm.c header versions to the byte width of one token.
var binVersions = map[int32]int{1: 2, 2: 4}

// ErrEmpty reports a source with no usable content.
var ErrEmpty = errors.New("no data")

// Stories splits text on lines equal to "<|endoftext|>" and strips each story;
// empty stories are dropped. Text without separators is one story.
func Stories(text string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for _, line := range strings.SplitAfter(text, "\n") {
		if strings.TrimSpace(line) == EndOfText {
			flush()
			continue
		}
		cur.WriteString(line)
	}
	flush()
	return out
}

// EncodeStories tokenizes each story and concatenates them, BOS before each.
func EncodeStories(enc Encoder, stories []string) ([]int, error) {
	var out []int
	for i, s := range stories {
		ids, err := enc.Encode(s)
		if err != nil {
			return nil, fmt.Errorf("story %d: %w", i, err)
		}
		if b := enc.BOS(); b >= 0 {
			out = append(out, b)
		}
		out = append(out, ids...)
	}
	return out, nil
}

// Load reads a data file in the given format and returns its token stream.
// enc is needed only for text (it may be nil otherwise).
func Load(path string, format Format, enc Encoder) ([]int, error) {
	if format == "" || format == FormatAuto {
		format = FormatText
		if f, ok := extFormats[strings.ToLower(filepath.Ext(path))]; ok {
			format = f
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	var toks []int
	switch format {
	case FormatText:
		if enc == nil {
			return nil, fmt.Errorf("data %s: text needs a tokenizer (the model has none; give token ids)", path)
		}
		if !utf8.Valid(raw) {
			return nil, fmt.Errorf("data %s: text is not valid UTF-8", path)
		}
		toks, err = EncodeStories(enc, Stories(string(raw)))
	case FormatIDs:
		toks, err = parseIDs(raw)
	case FormatBin:
		toks, err = parseBin(raw)
	default:
		return nil, fmt.Errorf("data %s: unknown format %q (want auto, text, ids or bin)", path, format)
	}
	if err != nil {
		return nil, fmt.Errorf("data %s: %w", path, err)
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("data %s: %w", path, ErrEmpty)
	}
	return toks, nil
}

func parseIDs(raw []byte) ([]int, error) {
	fields := bytes.Fields(raw)
	out := make([]int, len(fields))
	for i, f := range fields {
		v, err := strconv.Atoi(string(f))
		if err != nil || v < 0 {
			return nil, fmt.Errorf("token %d: %q is not a non-negative integer", i, f)
		}
		out[i] = v
	}
	return out, nil
}

func parseBin(raw []byte) ([]int, error) {
	if len(raw) < binHeaderInts*4 {
		return nil, fmt.Errorf("llm.c token file: %d bytes, shorter than its %d-byte header", len(raw), binHeaderInts*4)
	}
	hdr := func(i int) int32 { return int32(binary.LittleEndian.Uint32(raw[4*i:])) }
	if hdr(0) != binMagic {
		return nil, fmt.Errorf("llm.c token file: bad magic %d (want %d)", hdr(0), binMagic)
	}
	width, ok := binVersions[hdr(1)]
	if !ok {
		return nil, fmt.Errorf("llm.c token file: unsupported version %d (want 1 for uint16 or 2 for uint32 ids)", hdr(1))
	}
	n := int64(hdr(2))
	body := raw[binHeaderInts*4:]
	if n < 0 || n*int64(width) != int64(len(body)) {
		return nil, fmt.Errorf("llm.c token file: header says %d tokens, body holds %d bytes of %d-byte ids", n, len(body), width)
	}
	out := make([]int, n)
	for i := range out {
		if width == 2 {
			out[i] = int(binary.LittleEndian.Uint16(body[2*i:]))
		} else {
			out[i] = int(binary.LittleEndian.Uint32(body[4*i:]))
		}
	}
	return out, nil
}

// WriteBin encodes ids as an llm.c token file (version 1 when every id fits
// uint16, else version 2).
func WriteBin(ids []int) []byte {
	ver, width := int32(1), 2
	for _, v := range ids {
		if v > 0xffff {
			ver, width = 2, 4
			break
		}
	}
	out := make([]byte, binHeaderInts*4+len(ids)*width)
	binary.LittleEndian.PutUint32(out[0:], binMagic)
	binary.LittleEndian.PutUint32(out[4:], uint32(ver))
	binary.LittleEndian.PutUint32(out[8:], uint32(len(ids)))
	body := out[binHeaderInts*4:]
	for i, v := range ids {
		if width == 2 {
			binary.LittleEndian.PutUint16(body[2*i:], uint16(v))
		} else {
			binary.LittleEndian.PutUint32(body[4*i:], uint32(v))
		}
	}
	return out
}

// CheckVocab returns an error naming the first id outside [0, vocab).
func CheckVocab(ids []int, vocab int) error {
	for i, v := range ids {
		if v < 0 || v >= vocab {
			return fmt.Errorf("token id %d at position %d is outside the vocabulary [0, %d)", v, i, vocab)
		}
	}
	return nil
}

// Chunks cuts the stream into consecutive chunks of seqLen tokens (the
// remainder is dropped) and returns the first n (n = 0: all). Asking for more
// chunks than the data holds is an error.
func Chunks(ids []int, seqLen, n int) ([][]int, error) {
	if seqLen < 2 {
		return nil, fmt.Errorf("sequence length %d: must be at least 2", seqLen)
	}
	if n < 0 {
		return nil, fmt.Errorf("chunk count %d: must be ≥ 0", n)
	}
	avail := len(ids) / seqLen
	if avail == 0 {
		return nil, fmt.Errorf("sequence length %d is larger than the data (%d tokens)", seqLen, len(ids))
	}
	if n == 0 {
		n = avail
	}
	if n > avail {
		return nil, fmt.Errorf("too little data: %d tokens make %d chunks of %d, want %d", len(ids), avail, seqLen, n)
	}
	out := make([][]int, n)
	for i := range out {
		out[i] = ids[i*seqLen : (i+1)*seqLen]
	}
	return out, nil
}

// Select picks n of the chunks at random without replacement, deterministic
// for a given seed, keeping their original order.
func Select(chunks [][]int, n int, seed uint64) ([][]int, error) {
	if n <= 0 || n > len(chunks) {
		return nil, fmt.Errorf("select %d of %d chunks: out of range", n, len(chunks))
	}
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	idx := r.Perm(len(chunks))[:n]
	pick := make([]bool, len(chunks))
	for _, i := range idx {
		pick[i] = true
	}
	out := make([][]int, 0, n)
	for i, c := range chunks {
		if pick[i] {
			out = append(out, c)
		}
	}
	return out, nil
}
