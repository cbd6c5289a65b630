package tokenizer

import (
	"fmt"
	"unicode/utf8"
)

// bpeModel is HF's BPE model: a vocabulary, merges ranked by their order,
// and the unknown-token / byte-fallback rules for characters outside the
// vocabulary.
type bpeModel struct {
	vocab        map[string]int32
	tokens       []string // by id ("" where the id is unused)
	valid        []bool   // by id: the id is in the vocabulary
	merges       map[uint64]bpeMerge
	unk          int32 // -1 when none
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	prefix       string // continuing_subword_prefix
	suffix       string // end_of_word_suffix
	byteID       [256]int32
	// joins allows cutting long words into independent segments; nil when a
	// prefix or suffix makes symbols position-dependent.
	joins    *joinSet
	firstR   []rune // first rune of each token text, by id
	lastR    []rune // last rune of each token text, by id
	maxCache int    // words up to this many bytes are cached per call
}

type bpeMerge struct {
	rank int32
	id   int32
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// newBPEModel builds the model. merges are (left, right) token texts in rank
// order; a merge whose parts or result are not in the vocabulary is an error.
func newBPEModel(vocab map[string]int32, merges [][2]string, unk string, fuseUnk, byteFallback, ignoreMerges bool, prefix, suffix string) (*bpeModel, error) {
	m := &bpeModel{
		vocab:        vocab,
		merges:       make(map[uint64]bpeMerge, len(merges)),
		unk:          -1,
		fuseUnk:      fuseUnk,
		byteFallback: byteFallback,
		ignoreMerges: ignoreMerges,
		prefix:       prefix,
		suffix:       suffix,
		maxCache:     64,
	}
	maxID := int32(-1)
	for tok, id := range vocab {
		if id < 0 {
			return nil, fmt.Errorf("bpe: token %q has negative id %d", tok, id)
		}
		if id > maxID {
			maxID = id
		}
	}
	if maxID >= 1<<26 {
		return nil, fmt.Errorf("bpe: token id %d too large", maxID)
	}
	m.tokens = make([]string, maxID+1)
	seen := make([]bool, maxID+1)
	for tok, id := range vocab {
		if seen[id] {
			return nil, fmt.Errorf("bpe: id %d used by both %q and %q", id, m.tokens[id], tok)
		}
		seen[id] = true
		m.tokens[id] = tok
	}
	m.valid = seen
	if unk != "" {
		id, ok := vocab[unk]
		if !ok {
			return nil, fmt.Errorf("bpe: unk_token %q not in vocabulary", unk)
		}
		m.unk = id
	}
	for b := range m.byteID {
		m.byteID[b] = -1
		if id, ok := vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteID[b] = id
		}
	}
	if prefix == "" && suffix == "" {
		m.joins = newJoinSet()
	}
	for rank, mg := range merges {
		a, ok := vocab[mg[0]]
		if !ok {
			return nil, fmt.Errorf("bpe: merge %d %q %q: token %q not in vocabulary", rank, mg[0], mg[1], mg[0])
		}
		b, ok := vocab[mg[1]]
		if !ok {
			return nil, fmt.Errorf("bpe: merge %d %q %q: token %q not in vocabulary", rank, mg[0], mg[1], mg[1])
		}
		right := mg[1]
		if prefix != "" && len(right) >= len(prefix) && right[:len(prefix)] == prefix {
			right = right[len(prefix):]
		}
		res := mg[0] + right
		id, ok := vocab[res]
		if !ok {
			return nil, fmt.Errorf("bpe: merge %d %q %q: result %q not in vocabulary", rank, mg[0], mg[1], res)
		}
		m.merges[pairKey(a, b)] = bpeMerge{rank: int32(rank), id: id} // a later duplicate wins, as in HF
		if m.joins != nil {
			m.joins.add(res)
		}
	}
	m.firstR = make([]rune, len(m.tokens))
	m.lastR = make([]rune, len(m.tokens))
	for id, tok := range m.tokens {
		m.firstR[id], _ = utf8.DecodeRuneInString(tok)
		m.lastR[id], _ = utf8.DecodeLastRuneInString(tok)
	}
	return m, nil
}

// bpeScratch holds per-call buffers and the word cache.
type bpeScratch struct {
	m     merger
	base  []symbol
	cache map[string][]int32
}

// encodeWord appends the ids of one pre-tokenized word to out.
func (m *bpeModel) encodeWord(sc *bpeScratch, w string, out []int) []int {
	if w == "" {
		return out
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[w]; ok {
			return append(out, int(id))
		}
	}
	cacheable := len(w) <= m.maxCache
	if cacheable {
		if ids, ok := m.recall(sc, w, out); ok {
			return ids
		}
	}
	// Initial symbols: one per character, or its byte tokens, or unk.
	if cap(sc.base) < len(w) && len(w) > 256 {
		sc.base = make([]symbol, 0, len(w))
	}
	base := sc.base[:0]
	for i := 0; i < len(w); {
		_, size := utf8.DecodeRuneInString(w[i:])
		s := w[i : i+size]
		if m.prefix != "" && i > 0 {
			s = m.prefix + s
		}
		if m.suffix != "" && i+size == len(w) {
			s += m.suffix
		}
		if id, ok := m.vocab[s]; ok {
			base = append(base, symbol{start: int32(i), end: int32(i + size), id: id})
			i += size
			continue
		}
		if m.byteFallback {
			all := true
			for k := i; k < i+size; k++ {
				if m.byteID[w[k]] < 0 {
					all = false
					break
				}
			}
			if all {
				for k := i; k < i+size; k++ {
					base = append(base, symbol{start: int32(k), end: int32(k + 1), id: m.byteID[w[k]]})
				}
				i += size
				continue
			}
		}
		if m.unk >= 0 {
			if n := len(base); m.fuseUnk && n > 0 && base[n-1].id == m.unk {
				base[n-1].end = int32(i + size)
			} else {
				base = append(base, symbol{start: int32(i), end: int32(i + size), id: m.unk})
			}
		}
		// without an unknown token the character is dropped, as in HF
		i += size
	}
	sc.base = base
	mark := len(out)
	if m.joins == nil {
		out = m.mergeSegment(sc, base, out)
	} else {
		seg := 0
		for k := 1; k <= len(base); k++ {
			if k < len(base) && m.joins.joins(m.lastR[base[k-1].id], m.firstR[base[k].id]) {
				continue
			}
			out = m.mergeCached(sc, w, base[seg:k], out)
			seg = k
		}
	}
	if cacheable {
		m.remember(sc, w, out[mark:])
	}
	return out
}

// mergeCached merges one independent segment, using the cache for short ones.
func (m *bpeModel) mergeCached(sc *bpeScratch, w string, seg []symbol, out []int) []int {
	if len(seg) == 0 {
		return out
	}
	key := w[seg[0].start:seg[len(seg)-1].end]
	short := len(key) <= m.maxCache
	if short {
		if ids, ok := m.recall(sc, key, out); ok {
			return ids
		}
	}
	mark := len(out)
	out = m.mergeSegment(sc, seg, out)
	if short {
		m.remember(sc, key, out[mark:])
	}
	return out
}

// recall appends the cached ids of key to out; ok reports whether key was
// cached (remember).
func (m *bpeModel) recall(sc *bpeScratch, key string, out []int) (_ []int, ok bool) {
	ids, ok := sc.cache[key]
	for _, id := range ids {
		out = append(out, int(id))
	}
	return out, ok
}

func (m *bpeModel) remember(sc *bpeScratch, key string, ids []int) {
	if sc.cache == nil {
		sc.cache = map[string][]int32{}
	}
	if len(sc.cache) >= 1<<16 {
		clear(sc.cache)
	}
	v := make([]int32, len(ids))
	for i, id := range ids {
		v[i] = int32(id)
	}
	sc.cache[key] = v
}

// mergeSegment runs the merges on seg (lowest rank first, leftmost on ties).
func (m *bpeModel) mergeSegment(sc *bpeScratch, seg []symbol, out []int) []int {
	if len(seg) == 1 {
		return append(out, int(seg[0].id))
	}
	sc.m.syms = append(sc.m.syms[:0], seg...)
	sc.m.run(func(l, r *symbol) (float32, int32, bool) {
		mg, ok := m.merges[pairKey(l.id, r.id)]
		if !ok {
			return 0, 0, false
		}
		return -float32(mg.rank), mg.id, true
	})
	for i := int32(0); i >= 0; i = sc.m.syms[i].next {
		out = append(out, int(sc.m.syms[i].id))
	}
	return out
}
