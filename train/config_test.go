package train

import "testing"

// The output term is zero at a bi-branch window of at least --seq-len (every
// key original): train.Run warns about those windows, and only those.
func TestIdleOutWindows(t *testing.T) {
	c := Defaults()
	c.SeqLen, c.OutWindow, c.OutWindowAlt = 512, 0, 16
	if w := c.idleOutWindows(); len(w) != 0 {
		t.Errorf("windows 0 and 16 on 512 tokens: idle %v, want none", w)
	}
	c.OutWindow, c.OutWindowAlt = 512, 2000
	if w := c.idleOutWindows(); len(w) != 2 || w[0] != 512 || w[1] != 2000 {
		t.Errorf("windows 512 and 2000 on 512 tokens: idle %v, want both", w)
	}
	c.OutWindow, c.OutWindowAlt = 511, 0
	if w := c.idleOutWindows(); len(w) != 0 {
		t.Errorf("window 511 on 512 tokens reconstructs key 0 of the last query: idle %v, want none", w)
	}
	c.OutWindow, c.LambdaOut = 600, 0
	if w := c.idleOutWindows(); len(w) != 0 {
		t.Errorf("no output term: idle %v, want none", w)
	}
}
