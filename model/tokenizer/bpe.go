package tokenizer

// The merge engine shared by SPM (highest score first) and HF BPE (lowest
// merge rank first): a doubly linked list of symbols and a binary max-heap of
// candidate adjacent pairs, so a sequence of n symbols is merged in
// O(n log n). Stale heap entries are skipped lazily when popped.

// symbol is one live or merged piece of the input text.
type symbol struct {
	start, end int32 // byte span in the text being merged
	prev, next int32 // neighbours in the list, -1 at the ends
	id         int32 // token id, -1 when the span is not a known piece
	dead       bool  // merged into its left neighbour
}

// bigram is a candidate merge of syms[left] and syms[right].
type bigram struct {
	score float32 // larger merges first
	left  int32
	right int32
	end   int32 // syms[right].end when pushed; a different value means stale
	id    int32 // id of the merged piece
}

// pairFunc reports whether syms l and r (adjacent) may merge, with the
// merge's priority (larger first) and the merged piece's id.
type pairFunc func(l, r *symbol) (score float32, id int32, ok bool)

// merger holds reusable buffers for the merge loop.
type merger struct {
	syms  []symbol
	heap  []bigram
	cache map[string][]int32 // ids of short segments already merged (per call)
}

// less reports whether a should be popped before b.
func (a *bigram) before(b *bigram) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.left < b.left
}

func (m *merger) push(b bigram) {
	h := append(m.heap, b)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].before(&h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	m.heap = h
}

func (m *merger) pop() bigram {
	h := m.heap
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && h[r].before(&h[l]) {
			c = r
		}
		if !h[c].before(&h[i]) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	m.heap = h
	return top
}

func (m *merger) tryPair(l, r int32, f pairFunc) {
	if l < 0 || r < 0 {
		return
	}
	ls, rs := &m.syms[l], &m.syms[r]
	score, id, ok := f(ls, rs)
	if !ok {
		return
	}
	m.push(bigram{score: score, left: l, right: r, end: rs.end, id: id})
}

// run links m.syms (already filled with the initial symbols, in order) and
// merges until no candidate pair is left.
func (m *merger) run(f pairFunc) {
	n := int32(len(m.syms))
	for i := int32(0); i < n; i++ {
		m.syms[i].prev = i - 1
		m.syms[i].next = i + 1
		m.syms[i].dead = false
	}
	if n == 0 {
		return
	}
	m.syms[n-1].next = -1
	if cap(m.heap) < int(n) {
		m.heap = make([]bigram, 0, n)
	}
	m.heap = m.heap[:0]
	for i := int32(0); i+1 < n; i++ {
		m.tryPair(i, i+1, f)
	}
	for len(m.heap) > 0 {
		b := m.pop()
		ls, rs := &m.syms[b.left], &m.syms[b.right]
		if ls.dead || rs.dead || ls.next != b.right || rs.end != b.end {
			continue
		}
		ls.end = rs.end
		ls.id = b.id
		ls.next = rs.next
		rs.dead = true
		if rs.next >= 0 {
			m.syms[rs.next].prev = b.left
		}
		m.tryPair(ls.prev, b.left, f)
		m.tryPair(b.left, ls.next, f)
	}
}

// joinSet records which adjacent rune pairs occur inside some piece that a
// merge can produce. Where two neighbouring symbols meet at a rune pair
// outside the set, no merge can ever span that boundary, so the text can be
// cut there and each part merged on its own with the same result; this
// keeps the heap small and cache-resident on long inputs.
type joinSet struct {
	fast [(fastRunes*fastRunes + 63) / 64]uint64 // pairs of ASCII runes and "▁"
	m    map[uint64]struct{}
}

// fastRunes: ASCII plus one slot for U+2581.
const fastRunes = 129

func fastIndex(r rune) int {
	switch {
	case r >= 0 && r < 128:
		return int(r)
	case r == '\u2581':
		return 128
	}
	return -1
}

func newJoinSet() *joinSet { return &joinSet{m: map[uint64]struct{}{}} }

func runePair(a, b rune) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// add records every adjacent rune pair of piece (invalid bytes count as
// U+FFFD, which only makes the set larger and so the cut more cautious).
func (j *joinSet) add(piece string) {
	prev := rune(-1)
	for _, r := range piece {
		if prev >= 0 {
			if x, y := fastIndex(prev), fastIndex(r); x >= 0 && y >= 0 {
				k := x*fastRunes + y
				j.fast[k/64] |= 1 << (k % 64)
			} else {
				j.m[runePair(prev, r)] = struct{}{}
			}
		}
		prev = r
	}
}

// joins reports whether a merge may span the boundary between runes a and b.
func (j *joinSet) joins(a, b rune) bool {
	if x, y := fastIndex(a), fastIndex(b); x >= 0 && y >= 0 {
		k := x*fastRunes + y
		return j.fast[k/64]&(1<<(k%64)) != 0
	}
	_, ok := j.m[runePair(a, b)]
	return ok
}
