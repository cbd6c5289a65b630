package kv

import (
	"fmt"
	"strings"
)

// WindowMode is the bi-branch rule (docs/METHOD.md §5): which of the keys and
// values 0..t the query at position t reads as originals, the others being
// reconstructed from the compressed features, for a window of W tokens. It is
// a flag.Value and marshals as its name ("block" or "sliding").
type WindowMode int

const (
	// WindowBlock is the reference code's rule: key j is original for query t
	// iff floor(j/W) == floor(t/W).
	WindowBlock WindowMode = iota
	// WindowSliding is the paper's text: key j is original for query t iff
	// t − j < W (the last W tokens).
	WindowSliding
)

// windowModes is the table of names, in WindowMode order.
var windowModes = []string{"block", "sliding"}

// String names the mode as the command line and export metadata do.
func (m WindowMode) String() string {
	if m.Valid() {
		return windowModes[m]
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Valid reports whether m is WindowBlock or WindowSliding.
func (m WindowMode) Valid() bool { return m >= 0 && int(m) < len(windowModes) }

// ParseWindowMode parses "block" or "sliding".
func ParseWindowMode(s string) (WindowMode, error) {
	for i, name := range windowModes {
		if s == name {
			return WindowMode(i), nil
		}
	}
	return 0, fmt.Errorf("window mode %q: want %s", s, strings.Join(windowModes, " or "))
}

// Set implements flag.Value.
func (m *WindowMode) Set(s string) error {
	v, err := ParseWindowMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalText implements encoding.TextMarshaler: the mode's name.
func (m WindowMode) MarshalText() ([]byte, error) {
	if !m.Valid() {
		return nil, fmt.Errorf("window mode %d: not block or sliding", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *WindowMode) UnmarshalText(b []byte) error { return m.Set(string(b)) }

// OriginalFrom returns the first key position that stays original for the
// query at position t under window w: keys j in [OriginalFrom, t] are read
// from the full-precision branch, keys before it are reconstructed. w ≤ 0
// reconstructs every key (the result is t+1).
func (m WindowMode) OriginalFrom(t, w int) int {
	switch {
	case w <= 0:
		return t + 1
	case m == WindowSliding:
		return max(0, t-w+1)
	}
	return t / w * w
}

// Original reports whether, for the query at position t, key j (0 ≤ j ≤ t)
// is read from the full-precision branch under window w.
func (m WindowMode) Original(j, t, w int) bool { return j >= m.OriginalFrom(t, w) }
