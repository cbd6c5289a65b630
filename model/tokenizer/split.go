package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Go's regexp has no lookahead, so the split patterns of the GPT-2 family
// are implemented as hand-written scanners that reproduce the matches of the
// original (Oniguruma) regex, alternative by alternative. \s is Unicode
// White_Space, \p{L} letters, \p{N} numbers, as in the original engine.

// splitScanner describes one of the known patterns.
type splitScanner struct {
	name string
	// ciContractions: (?i:'s|'t|…) instead of 's|'t|….
	ciContractions bool
	// cl100k: letters may take one leading [^\r\n\p{L}\p{N}], numbers take no
	// leading space, punctuation runs swallow trailing [\r\n]*, and the
	// \s*[\r\n]+ alternative exists.
	cl100k bool
	// maxDigits bounds \p{N}{1,maxDigits} (cl100k); 0 means ` ?\p{N}+`.
	maxDigits int
}

const (
	gpt2Pattern   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	cl100kPattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

var (
	gpt2Scanner   = &splitScanner{name: "gpt2"}
	cl100kScanner = &splitScanner{name: "llama3", ciContractions: true, cl100k: true, maxDigits: 3}
	qwen2Scanner  = &splitScanner{name: "qwen2", ciContractions: true, cl100k: true, maxDigits: 1}
)

// knownPatterns maps the regex source text (as written in tokenizer.json)
// to its scanner.
var knownPatterns = map[string]*splitScanner{
	gpt2Pattern:   gpt2Scanner,
	cl100kPattern: cl100kScanner,
	qwen2Pattern:  qwen2Scanner,
}

func scannerFor(pattern string) (*splitScanner, error) {
	if sc, ok := knownPatterns[pattern]; ok {
		return sc, nil
	}
	return nil, fmt.Errorf("unsupported split regex %q (known: GPT-2, Llama-3/cl100k, Qwen2 patterns)", pattern)
}

func isL(r rune) bool { return unicode.IsLetter(r) }
func isN(r rune) bool { return unicode.IsNumber(r) }
func isS(r rune) bool { return unicode.IsSpace(r) }
func isO(r rune) bool { return !isS(r) && !isL(r) && !isN(r) }

// at decodes the rune at i (utf8.RuneError, 0 at the end).
func at(s string, i int) (rune, int) {
	if i >= len(s) {
		return utf8.RuneError, 0
	}
	return utf8.DecodeRuneInString(s[i:])
}

// run advances from i over runes satisfying f, at most max of them (max ≤ 0:
// no limit), and returns the end.
func run(s string, i int, f func(rune) bool, max int) int {
	n := 0
	for i < len(s) && (max <= 0 || n < max) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !f(r) {
			break
		}
		i += size
		n++
	}
	return i
}

// contraction returns the end of 's|'t|'re|'ve|'m|'ll|'d at i, or -1.
func (sc *splitScanner) contraction(s string, i int) int {
	if s[i] != '\'' {
		return -1
	}
	eq := func(k int, c byte) bool {
		if k >= len(s) {
			return false
		}
		if s[k] == c {
			return true
		}
		if !sc.ciContractions {
			return false
		}
		if s[k] == c-'a'+'A' {
			return true
		}
		// Unicode case folding: ſ (U+017F) folds to s.
		return c == 's' && strings.HasPrefix(s[k:], "\u017f")
	}
	j := i + 1
	switch {
	case eq(j, 's'):
		if s[j] == 0xC5 { // ſ is two bytes
			return j + 2
		}
		return j + 1
	case eq(j, 't'), eq(j, 'm'), eq(j, 'd'):
		return j + 1
	case eq(j, 'r') && eq(j+1, 'e'), eq(j, 'v') && eq(j+1, 'e'), eq(j, 'l') && eq(j+1, 'l'):
		return j + 2
	}
	return -1
}

// next returns the end of the match that starts at i (every position starts
// a match, since the patterns cover every character).
func (sc *splitScanner) next(s string, i int) int {
	if e := sc.contraction(s, i); e >= 0 {
		return e
	}
	r, size := at(s, i)
	r2, _ := at(s, i+size)
	more := i+size < len(s)
	// letters
	if sc.cl100k {
		if r != '\r' && r != '\n' && !isL(r) && !isN(r) && more && isL(r2) {
			return run(s, i+size, isL, 0)
		}
	} else if r == ' ' && more && isL(r2) {
		return run(s, i+1, isL, 0)
	}
	if isL(r) {
		return run(s, i, isL, 0)
	}
	// numbers
	if sc.maxDigits > 0 {
		if isN(r) {
			return run(s, i, isN, sc.maxDigits)
		}
	} else {
		if r == ' ' && more && isN(r2) {
			return run(s, i+1, isN, 0)
		}
		if isN(r) {
			return run(s, i, isN, 0)
		}
	}
	// punctuation and symbols
	j := -1
	if r == ' ' && more && isO(r2) {
		j = run(s, i+1, isO, 0)
	} else if isO(r) {
		j = run(s, i, isO, 0)
	}
	if j >= 0 {
		if sc.cl100k {
			j = run(s, j, func(r rune) bool { return r == '\r' || r == '\n' }, 0)
		}
		return j
	}
	// whitespace (r is whitespace here)
	end := run(s, i, isS, 0)
	if sc.cl100k {
		// \s*[\r\n]+ : up to and including the last \r or \n of the run.
		if k := strings.LastIndexAny(s[i:end], "\r\n"); k >= 0 {
			return i + k + 1
		}
	}
	if end == len(s) {
		return end
	}
	// \s+(?!\S): leave the last whitespace character for the next match.
	_, last := utf8.DecodeLastRuneInString(s[i:end])
	if end-last > i {
		return end - last
	}
	return end
}

// matches calls f with the span of every match in s, in order.
func (sc *splitScanner) matches(s string, f func(a, b int)) {
	for i := 0; i < len(s); {
		e := sc.next(s, i)
		if e <= i { // cannot happen; guard against an endless loop
			_, size := utf8.DecodeRuneInString(s[i:])
			e = i + size
		}
		f(i, e)
		i = e
	}
}

// splitBehavior is HF's SplitDelimiterBehavior.
type splitBehavior int

const (
	behaviorRemoved splitBehavior = iota
	behaviorIsolated
	behaviorMergedWithPrevious
	behaviorMergedWithNext
	behaviorContiguous
)

var behaviorNames = map[string]splitBehavior{
	"Removed":            behaviorRemoved,
	"Isolated":           behaviorIsolated,
	"MergedWithPrevious": behaviorMergedWithPrevious,
	"MergedWithNext":     behaviorMergedWithNext,
	"Contiguous":         behaviorContiguous,
}

// splitBy cuts s at the spans that find reports (in order, non-overlapping,
// non-empty) and arranges delimiters and the text between them as HF's
// NormalizedString::split does, returning the parts.
func splitBy(s string, find func(s string, f func(a, b int)), b splitBehavior, invert bool) []string {
	var out []string
	splitEach(s, find, b, invert, func(part string) { out = append(out, part) })
	return out
}

// splitEach is splitBy streaming its parts to emit. With invert, the
// reported spans are the pieces to keep and the rest are the delimiters.
func splitEach(s string, find func(s string, f func(a, b int)), b splitBehavior, invert bool, emit func(string)) {
	start := 0 // MergedWith*: start of the pending part
	runA := -1 // Contiguous: start of the pending delimiter run
	span := func(a, e int, delim bool) {
		switch b {
		case behaviorRemoved:
			if !delim {
				emit(s[a:e])
			}
		case behaviorIsolated:
			emit(s[a:e])
		case behaviorMergedWithPrevious:
			if delim {
				emit(s[start:e])
				start = e
			}
		case behaviorMergedWithNext:
			if delim && a > start {
				emit(s[start:a])
				start = a
			}
		case behaviorContiguous:
			if delim {
				if runA < 0 {
					runA = a
				}
				return
			}
			if runA >= 0 {
				emit(s[runA:a])
				runA = -1
			}
			emit(s[a:e])
		}
	}
	last := 0
	find(s, func(a, e int) {
		if a > last {
			span(last, a, invert)
		}
		span(a, e, !invert)
		last = e
	})
	if last < len(s) {
		span(last, len(s), invert)
	}
	switch b {
	case behaviorMergedWithPrevious, behaviorMergedWithNext:
		if start < len(s) {
			emit(s[start:])
		}
	case behaviorContiguous:
		if runA >= 0 {
			emit(s[runA:])
		}
	}
}

// literalFinder reports every non-overlapping occurrence of lit.
func literalFinder(lit string) func(s string, f func(a, b int)) {
	return func(s string, f func(a, b int)) {
		if lit == "" {
			return
		}
		for i := 0; ; {
			k := strings.Index(s[i:], lit)
			if k < 0 {
				return
			}
			f(i+k, i+k+len(lit))
			i += k + len(lit)
		}
	}
}

// runeClassFinder reports each rune satisfying f (one span per rune), or
// each maximal run when runs is set.
func runeClassFinder(f func(rune) bool, runs bool) func(s string, g func(a, b int)) {
	return func(s string, g func(a, b int)) {
		for i := 0; i < len(s); {
			r, size := utf8.DecodeRuneInString(s[i:])
			if !f(r) {
				i += size
				continue
			}
			e := i + size
			if runs {
				e = run(s, i, f, 0)
			}
			g(i, e)
			i = e
		}
	}
}
