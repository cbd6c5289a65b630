package tokenizer

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode/utf8"
)

// spaceMark is SentencePiece's visible space, U+2581 "▁".
const spaceMark = "\u2581"

// unkSurface is what Decode writes for the unknown token, as SentencePiece does.
const unkSurface = " \u2047 "

// SPM is the SentencePiece-BPE tokenizer that llama.cpp builds from a GGUF
// vocabulary with tokenizer.ggml.model = "llama".
//
// Encode: user-defined pieces are cut out of the text first (as llama.cpp
// does); every remaining fragment gets a dummy-prefix space when it starts
// the text or follows a user-defined piece, spaces become U+2581, the
// fragment is split into UTF-8 characters, and the adjacent pair whose
// concatenation is a normal or user-defined piece with the highest score is
// merged repeatedly (leftmost on ties). Characters that end up as no piece
// are written as <0xNN> byte tokens. Invalid UTF-8 is not rejected: each
// invalid byte is its own symbol and so ends up as its byte token, which
// Decode turns back into the same byte.
//
// Decode: control tokens are skipped, U+2581 becomes a space, byte tokens
// are reassembled into raw bytes, the unknown token is written " ⁇ ", and
// the leading space of the first piece is dropped when nothing precedes it
// in the output (SentencePiece's rule), so Decode(Encode(s)) == s and
// Decode(append([]int{BOS}, Encode(s)...)) == s.
type SPM struct {
	pieces []string
	scores []float32
	types  []int32
	merge  map[string]int32 // normal and user-defined pieces, by text
	byteID [256]int32       // id of <0xNN>
	user   map[byte][]int32 // user-defined pieces by first byte, longest first
	joins  *joinSet         // rune pairs inside mergeable pieces
	bos    int
	eos    int
	unk    int

	addSpacePrefix bool
}

// NewSPM builds an SPM from a GGUF-style vocabulary. tokens, scores and
// types must have the same length; bos, eos and unk are ids or -1. All 256
// byte tokens <0x00>..<0xFF> must be present (with type byte, or any type
// when types marks none as byte).
func NewSPM(tokens []string, scores []float32, types []int32, bos, eos, unk int) (*SPM, error) {
	n := len(tokens)
	if n == 0 {
		return nil, errors.New("spm: empty vocabulary")
	}
	if len(scores) != n {
		return nil, fmt.Errorf("spm: %d tokens but %d scores", n, len(scores))
	}
	if len(types) != n {
		return nil, fmt.Errorf("spm: %d tokens but %d token types", n, len(types))
	}
	for _, sp := range []struct {
		name string
		id   int
	}{{"bos", bos}, {"eos", eos}, {"unk", unk}} {
		if sp.id < -1 || sp.id >= n {
			return nil, fmt.Errorf("spm: %s id %d outside vocabulary of %d", sp.name, sp.id, n)
		}
	}
	t := &SPM{
		pieces:         tokens,
		scores:         scores,
		types:          types,
		merge:          make(map[string]int32, n),
		joins:          newJoinSet(),
		user:           map[byte][]int32{},
		bos:            bos,
		eos:            eos,
		unk:            unk,
		addSpacePrefix: true,
	}
	for i := range t.byteID {
		t.byteID[i] = -1
	}
	for i, p := range tokens {
		if f := scores[i]; math.IsNaN(float64(f)) {
			return nil, fmt.Errorf("spm: token %d %q: score is NaN", i, p)
		}
		switch types[i] {
		case TypeNormal, TypeUndefined, TypeUserDefined:
			if p == "" {
				continue
			}
			if _, dup := t.merge[p]; !dup {
				t.merge[p] = int32(i)
			}
			t.joins.add(p)
			if types[i] == TypeUserDefined {
				t.user[p[0]] = append(t.user[p[0]], int32(i))
			}
		case TypeByte:
			b, ok := parseByteToken(p)
			if !ok {
				return nil, fmt.Errorf("spm: token %d %q has type byte but is not <0xNN>", i, p)
			}
			if t.byteID[b] < 0 {
				t.byteID[b] = int32(i)
			}
		case TypeUnknown, TypeControl, TypeUnused:
		default:
			return nil, fmt.Errorf("spm: token %d %q: unknown token type %d", i, p, types[i])
		}
	}
	noneTyped := true
	for _, id := range t.byteID {
		if id >= 0 {
			noneTyped = false
			break
		}
	}
	if noneTyped {
		for i, p := range tokens {
			if b, ok := parseByteToken(p); ok && t.byteID[b] < 0 {
				t.byteID[b] = int32(i)
			}
		}
	}
	var missing []string
	for b, id := range t.byteID {
		if id < 0 {
			missing = append(missing, fmt.Sprintf("<0x%02X>", b))
		}
	}
	if len(missing) > 0 {
		more := ""
		if len(missing) > 4 {
			more = fmt.Sprintf(" and %d more", len(missing)-4)
			missing = missing[:4]
		}
		return nil, fmt.Errorf("spm: vocabulary lacks byte-fallback tokens %s%s", strings.Join(missing, ", "), more)
	}
	for k, ids := range t.user {
		sort.SliceStable(ids, func(a, b int) bool { return len(tokens[ids[a]]) > len(tokens[ids[b]]) })
		t.user[k] = ids
	}
	return t, nil
}

// parseByteToken parses "<0xNN>" (hex digits in either case).
func parseByteToken(p string) (byte, bool) {
	if len(p) != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexVal(p[3])
	lo, ok2 := hexVal(p[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// SetAddSpacePrefix turns the dummy-prefix space on or off (GGUF key
// tokenizer.ggml.add_space_prefix; on by default).
func (t *SPM) SetAddSpacePrefix(on bool) { t.addSpacePrefix = on }

// BOS returns the beginning-of-sequence id, or -1.
func (t *SPM) BOS() int { return t.bos }

// EOS returns the end-of-sequence id, or -1.
func (t *SPM) EOS() int { return t.eos }

// Unk returns the unknown-token id, or -1.
func (t *SPM) Unk() int { return t.unk }

// VocabSize returns the number of ids.
func (t *SPM) VocabSize() int { return len(t.pieces) }

// Piece returns the vocabulary text of id, or "" outside the vocabulary.
func (t *SPM) Piece(id int) string {
	if id < 0 || id >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

// Score returns the merge score of id (0 outside the vocabulary).
func (t *SPM) Score(id int) float32 {
	if id < 0 || id >= len(t.scores) {
		return 0
	}
	return t.scores[id]
}

// Type returns the token type of id (TypeUndefined outside the vocabulary).
func (t *SPM) Type(id int) int32 {
	if id < 0 || id >= len(t.types) {
		return TypeUndefined
	}
	return t.types[id]
}

// Encode tokenizes text (no BOS/EOS added). Empty text gives no ids.
func (t *SPM) Encode(text string) ([]int, error) {
	out := make([]int, 0, len(text)/2+4)
	var m merger
	var buf strings.Builder
	prevSpecial := true
	flush := func(frag string) {
		buf.Reset()
		if t.addSpacePrefix && prevSpecial {
			buf.WriteString(spaceMark)
		}
		for i := 0; i < len(frag); {
			j := strings.IndexByte(frag[i:], ' ')
			if j < 0 {
				buf.WriteString(frag[i:])
				break
			}
			buf.WriteString(frag[i : i+j])
			buf.WriteString(spaceMark)
			i += j + 1
		}
		out = t.encodeFragment(&m, buf.String(), out)
		prevSpecial = false
	}
	start := 0
	if len(t.user) > 0 {
		for i := 0; i < len(text); {
			id := t.matchUser(text[i:])
			if id < 0 {
				i++
				continue
			}
			if i > start {
				flush(text[start:i])
			}
			out = append(out, int(id))
			prevSpecial = true
			i += len(t.pieces[id])
			start = i
		}
	}
	if start < len(text) {
		flush(text[start:])
	}
	return out, nil
}

// matchUser returns the longest user-defined piece that s starts with, or -1.
func (t *SPM) matchUser(s string) int32 {
	for _, id := range t.user[s[0]] {
		if strings.HasPrefix(s, t.pieces[id]) {
			return id
		}
	}
	return -1
}

// encodeFragment appends the ids of s (already escaped) to out.
func (t *SPM) encodeFragment(m *merger, s string, out []int) []int {
	seg := 0 // start of the current independent segment
	prev := rune(-1)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if prev >= 0 && !t.joins.joins(prev, r) {
			out = t.encodeSegment(m, s, seg, i, out)
			seg = i
		}
		prev = r
		i += size
	}
	return t.encodeSegment(m, s, seg, len(s), out)
}

// spmCacheMax is the longest segment (bytes) whose ids Encode remembers.
const spmCacheMax = 64

// encodeSegment merges s[a:b] and appends its ids to out; short segments
// are looked up in and added to m.cache.
func (t *SPM) encodeSegment(m *merger, s string, a, b int, out []int) []int {
	if a >= b {
		return out
	}
	key := s[a:b]
	if b-a <= spmCacheMax {
		if ids, ok := m.cache[key]; ok {
			for _, id := range ids {
				out = append(out, int(id))
			}
			return out
		}
		mark := len(out)
		defer func() {
			if m.cache == nil {
				m.cache = map[string][]int32{}
			} else if len(m.cache) >= 1<<16 {
				clear(m.cache)
			}
			v := make([]int32, len(out)-mark)
			for i, id := range out[mark:] {
				v[i] = int32(id)
			}
			m.cache[key] = v
		}()
	}
	m.syms = m.syms[:0]
	for i := a; i < b; {
		_, size := utf8.DecodeRuneInString(s[i:b])
		id := int32(-1)
		if v, ok := t.merge[s[i:i+size]]; ok {
			id = v
		}
		m.syms = append(m.syms, symbol{start: int32(i), end: int32(i + size), id: id})
		i += size
	}
	m.run(func(l, r *symbol) (float32, int32, bool) {
		id, ok := t.merge[s[l.start:r.end]]
		if !ok {
			return 0, 0, false
		}
		return t.scores[id], id, true
	})
	for i := int32(0); i >= 0; i = m.syms[i].next {
		sy := &m.syms[i]
		if sy.id >= 0 {
			out = append(out, int(sy.id))
			continue
		}
		for k := sy.start; k < sy.end; k++ {
			out = append(out, int(t.byteID[s[k]]))
		}
	}
	return out
}

// Decode turns ids back into text (see SPM for the rules). An id outside the
// vocabulary is an error.
func (t *SPM) Decode(ids []int) (string, error) {
	var sb strings.Builder
	first := t.addSpacePrefix // the next normal piece may lose its leading space
	for k, id := range ids {
		if id < 0 || id >= len(t.pieces) {
			return "", fmt.Errorf("spm decode: id %d at position %d outside vocabulary of %d", id, k, len(t.pieces))
		}
		switch t.types[id] {
		case TypeControl, TypeUnused:
			continue
		case TypeUnknown:
			sb.WriteString(unkSurface)
			continue
		case TypeByte:
			b, _ := parseByteToken(t.pieces[id])
			sb.WriteByte(b)
			first = false
			continue
		}
		p := strings.ReplaceAll(t.pieces[id], spaceMark, " ")
		if first && sb.Len() == 0 {
			p = strings.TrimPrefix(p, " ")
		}
		first = false
		sb.WriteString(p)
	}
	return sb.String(), nil
}
