package kv

import (
	"encoding/json"
	"flag"
	"strings"
	"testing"

	"github.com/cskv/cskv/quant"
)

// The rule against its definition: block keeps j iff floor(j/W) == floor(t/W),
// sliding iff t − j < W, and W = 0 reconstructs every key.
func TestWindowRule(t *testing.T) {
	for _, m := range []WindowMode{WindowBlock, WindowSliding} {
		for _, w := range []int{0, 1, 3, 32} {
			for tt := 0; tt < 70; tt++ {
				for j := 0; j <= tt; j++ {
					want := false
					switch {
					case w == 0:
					case m == WindowBlock:
						want = j/w == tt/w
					default:
						want = tt-j < w
					}
					if got := m.Original(j, tt, w); got != want {
						t.Fatalf("%s W %d: j %d, t %d: original %v, want %v", m, w, j, tt, got, want)
					}
				}
			}
		}
	}
	cases := []struct {
		m        WindowMode
		j, t, w  int
		original bool
	}{
		{WindowBlock, 31, 32, 32, false}, {WindowBlock, 32, 32, 32, true}, {WindowBlock, 32, 63, 32, true}, {WindowBlock, 31, 63, 32, false},
		{WindowSliding, 1, 32, 32, true}, {WindowSliding, 0, 32, 32, false}, {WindowSliding, 31, 63, 32, false}, {WindowSliding, 32, 63, 32, true},
	}
	for _, c := range cases {
		if got := c.m.Original(c.j, c.t, c.w); got != c.original {
			t.Errorf("%s: j %d, t %d, W %d: original %v", c.m, c.j, c.t, c.w, got)
		}
	}
}

func TestWindowModeParse(t *testing.T) {
	var m WindowMode
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Var(&m, "window-mode", "")
	if err := fs.Parse([]string{"--window-mode", "sliding"}); err != nil || m != WindowSliding {
		t.Fatalf("parse sliding: %v, %v", m, err)
	}
	if err := m.Set("diagonal"); err == nil || !strings.Contains(err.Error(), `"diagonal"`) || m != WindowSliding {
		t.Errorf("Set(diagonal): %v, mode now %v", err, m)
	}
	raw, err := json.Marshal(struct{ W WindowMode }{WindowSliding})
	if err != nil || string(raw) != `{"W":"sliding"}` {
		t.Errorf("marshal: %s, %v", raw, err)
	}
	var back struct{ W WindowMode }
	if err := json.Unmarshal([]byte(`{"W":"block"}`), &back); err != nil || back.W != WindowBlock {
		t.Errorf("unmarshal block: %v, %v", back.W, err)
	}
	if err := json.Unmarshal([]byte(`{"W":"x"}`), &back); err == nil {
		t.Error("unmarshal x: no error")
	}
	if _, err := json.Marshal(WindowMode(7)); err == nil {
		t.Error("marshal mode 7: no error")
	}
	if WindowMode(7).Valid() || WindowMode(7).String() != "mode(7)" {
		t.Errorf("mode 7: valid %v, %s", WindowMode(7).Valid(), WindowMode(7))
	}
}

func TestQuantSpecs(t *testing.T) {
	for _, c := range []struct {
		q      Quant
		rk, rv int
		k, v   quant.Spec
		err    string
	}{
		{q: Quant{}, rk: 6, rv: 4, k: quant.Spec{Bits: 16, GroupSize: 3}, v: quant.Spec{Bits: 16, GroupSize: 2}},
		{q: Quant{KBits: 16, VBits: 16}, rk: 5, rv: 3, k: quant.Spec{Bits: 16, GroupSize: 5}, v: quant.Spec{Bits: 16, GroupSize: 3}},
		{q: Quant{KBits: 4, VBits: 2, ClampZero: true}, rk: 8, rv: 4,
			k: quant.Spec{Bits: 4, GroupSize: 4, ClampZero: true}, v: quant.Spec{Bits: 2, GroupSize: 2, ClampZero: true}},
		{q: Quant{KBits: 4, VBits: 8, KPerChannel: true, QuantWindow: 32}, rk: 5, rv: 4,
			k: quant.Spec{Bits: 4, Grouping: quant.PerChannel, GroupSize: 32}, v: quant.Spec{Bits: 8, GroupSize: 2}},
		{q: Quant{KBits: 4}, rk: 5, rv: 4, err: "key rank 5"},
		{q: Quant{VBits: 3}, rk: 4, rv: 5, err: "value rank 5"},
		{q: Quant{KBits: 5}, rk: 4, rv: 4, err: "keys: quant: bits 5"},
		{q: Quant{KBits: 4, KPerChannel: true}, rk: 4, rv: 4, err: "keys: quant: group size 0"},
	} {
		k, v, err := c.q.Specs(c.rk, c.rv, 2)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v: err %v, want %q", c.q, err, c.err)
			}
		case err != nil:
			t.Errorf("%+v: %v", c.q, err)
		case k != c.k || v != c.v:
			t.Errorf("%+v: specs %+v, %+v, want %+v, %+v", c.q, k, v, c.k, c.v)
		}
	}
}

func TestFactorsCheck(t *testing.T) {
	f := Factors{Ak: make([]float32, 3*8), Bk: make([]float32, 4*3), Av: make([]float32, 2*8), Bv: make([]float32, 4*2), KRank: 3, VRank: 2}
	if err := f.Check(8, 4); err != nil {
		t.Fatal(err)
	}
	if got := f.Shapes(8, 4); got != [4][2]int{{3, 8}, {4, 3}, {2, 8}, {4, 2}} {
		t.Errorf("shapes %v", got)
	}
	g := f
	g.Bv = g.Bv[1:]
	if err := g.Check(8, 4); err == nil || !strings.Contains(err.Error(), "v_proj_b has 7 values, want shape [4 2]") {
		t.Errorf("short Bv: %v", err)
	}
	g = f
	g.KRank = 0
	if err := g.Check(8, 4); err == nil {
		t.Error("rank 0 accepted")
	}
	var h Factors
	h.SetTensors(f.Tensors())
	if &h.Av[0] != &f.Av[0] || h.KRank != 0 {
		t.Error("SetTensors does not alias or sets ranks")
	}
}
