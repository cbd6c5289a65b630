package kvcache

import (
	"fmt"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cskv/cskv/model/dtype"
	"github.com/cskv/cskv/quant"
)

func randSlice(rng *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * scale)
	}
	return x
}

// settings exercised by the equality and accounting tests.
func testConfigs() []Config {
	pc := func(bits, g int) quant.Spec { return quant.Spec{Bits: bits, Grouping: quant.PerChannel, GroupSize: g} }
	pt := func(bits, g int) quant.Spec { return quant.Spec{Bits: bits, Grouping: quant.PerToken, GroupSize: g} }
	base := Config{NKVHeads: 2, HeadDim: 4, KRank: 6, VRank: 4}
	var out []Config
	add := func(w int, m kv.WindowMode, k, v quant.Spec) {
		c := base
		c.Window, c.Mode, c.K, c.V = w, m, k, v
		out = append(out, c)
	}
	for _, m := range []kv.WindowMode{kv.WindowBlock, kv.WindowSliding} {
		add(8, m, pc(4, 8), pt(4, 2))   // KIVI keys over the window, values per head
		add(8, m, pc(2, 4), pt(2, 2))   // key groups smaller than the window
		add(5, m, pc(4, 5), pt(2, 2))   // odd window
		add(6, m, pt(4, 3), pt(4, 2))   // per-token keys
		add(4, m, pc(3, 2), pt(8, 4))   // 3 and 8 bits
		add(8, m, pt(16, 0), pt(16, 0)) // off: fp16 features
		add(3, m, pt(16, 0), pt(2, 1))  // mixed
		add(1, m, pc(2, 1), pt(4, 2))   // window 1
		c := out[0]
		c.Mode = m
		c.K.ClampZero, c.V.ClampZero = true, true
		out = append(out, c)
	}
	return out
}

// parallel computes, independently of the cache, keys or values (n, D) for the
// query at n−1: the original where the rule says original, else
// B·FakeQuant(C) over the largest group-aligned prefix (RoundF16(C) with bits
// 16), accumulated in float32 in channel order.
func parallel(t *testing.T, c Config, orig, feat, b []float32, rank int, s quant.Spec, n int) []float32 {
	t.Helper()
	d := c.KVDim()
	fq := make([]float32, n*rank)
	prefix := n
	if s.Bits == 16 {
		for i := range fq {
			fq[i] = dtype.RoundF16(feat[i])
		}
	} else {
		g := 1
		if s.Grouping == quant.PerChannel {
			g = s.GroupSize
		}
		prefix = n / g * g
		if err := quant.FakeQuant(fq[:prefix*rank], nil, feat[:prefix*rank], prefix, rank, s); err != nil {
			t.Fatal(err)
		}
	}
	out := make([]float32, n*d)
	q := n - 1
	for j := 0; j < n; j++ {
		var original bool
		if c.Mode == kv.WindowBlock {
			original = j/c.Window == q/c.Window
		} else {
			original = q-j < c.Window
		}
		if original {
			for i := 0; i < d; i++ {
				out[j*d+i] = orig[j*d+i]
			}
			continue
		}
		if j >= prefix {
			t.Fatalf("token %d is reconstructed for query %d but its group (prefix %d) is incomplete", j, q, prefix)
		}
		for i := 0; i < d; i++ {
			out[j*d+i] = linalg.Dot(fq[j*rank:(j+1)*rank], b[i*rank:(i+1)*rank])
		}
	}
	return out
}

func describe(c Config) string {
	return fmt.Sprintf("%s W%d K[%v] V[%v]", c.Mode, c.Window, c.K, c.V)
}

// TestKVMatchesParallel decodes token by token and checks, after every append,
// that KV equals the parallel evaluation exactly and that AllocatedBytes equals
// the memory formula.
func TestKVMatchesParallel(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, c := range testConfigs() {
		name := describe(c)
		d := c.KVDim()
		n := 4*c.Window + 3
		if n < 20 {
			n = 20
		}
		bk := randSlice(rng, d*c.KRank, 0.5)
		bv := randSlice(rng, d*c.VRank, 0.5)
		ks, vs := randSlice(rng, n*d, 1), randSlice(rng, n*d, 1)
		cks, cvs := randSlice(rng, n*c.KRank, 2), randSlice(rng, n*c.VRank, 2)
		layer, err := NewLayer(c, bk, bv)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := layer.AllocatedBytes(); got != 0 {
			t.Fatalf("%s: empty cache holds %d bytes", name, got)
		}
		reconstructed := 0
		for i := 0; i < n; i++ {
			if err := layer.Append(ks[i*d:(i+1)*d], vs[i*d:(i+1)*d], cks[i*c.KRank:(i+1)*c.KRank], cvs[i*c.VRank:(i+1)*c.VRank]); err != nil {
				t.Fatalf("%s: token %d: %v", name, i, err)
			}
			if got, want := layer.AllocatedBytes(), Bytes(c, i+1); got != want.Total {
				t.Fatalf("%s: after %d tokens: allocated %d bytes, formula %+v", name, i+1, got, want)
			}
			m := i + 1
			keys, values := make([]float32, m*d), make([]float32, m*d)
			if err := layer.KV(keys, values); err != nil {
				t.Fatalf("%s: token %d: %v", name, i, err)
			}
			wantK := parallel(t, c, ks, cks, bk, c.KRank, c.K, m)
			wantV := parallel(t, c, vs, cvs, bv, c.VRank, c.V, m)
			for e := range keys {
				if math.Float32bits(keys[e]) != math.Float32bits(wantK[e]) {
					t.Fatalf("%s: query %d: key (%d, %d) = %g, parallel %g", name, i, e/d, e%d, keys[e], wantK[e])
				}
				if math.Float32bits(values[e]) != math.Float32bits(wantV[e]) {
					t.Fatalf("%s: query %d: value (%d, %d) = %g, parallel %g", name, i, e/d, e%d, values[e], wantV[e])
				}
			}
			for j := 0; j <= i; j++ {
				if !c.Mode.Original(j, i, c.Window) {
					reconstructed++
				}
			}
		}
		if reconstructed == 0 {
			t.Fatalf("%s: nothing was reconstructed: the test proves nothing", name)
		}
	}
}

// Reconstructed rows differ from the originals (the compression is real) but
// stay close to B·C, within the quantisation error.
func TestReconstructionIsQuantised(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	c := testConfigs()[0] // block, 4-bit
	d := c.KVDim()
	bk := randSlice(rng, d*c.KRank, 0.5)
	bv := randSlice(rng, d*c.VRank, 0.5)
	layer, err := NewLayer(c, bk, bv)
	if err != nil {
		t.Fatal(err)
	}
	n := 2*c.Window + 1
	cks := randSlice(rng, n*c.KRank, 1)
	for i := 0; i < n; i++ {
		// Originals deliberately far from B·C: a reconstructed row cannot be mistaken for one.
		k := make([]float32, d)
		for e := range k {
			k[e] = 100
		}
		if err := layer.Append(k, k, cks[i*c.KRank:(i+1)*c.KRank], make([]float32, c.VRank)); err != nil {
			t.Fatal(err)
		}
	}
	keys, values := make([]float32, n*d), make([]float32, n*d)
	if err := layer.KV(keys, values); err != nil {
		t.Fatal(err)
	}
	maxErr, exactRows := 0.0, 0
	for j := 0; j < 2*c.Window; j++ { // blocks 0 and 1 are reconstructed for the query at 2W
		same := true
		for e := 0; e < d; e++ {
			var exact float64
			for r := 0; r < c.KRank; r++ {
				exact += float64(cks[j*c.KRank+r]) * float64(bk[e*c.KRank+r])
			}
			maxErr = math.Max(maxErr, math.Abs(float64(keys[j*d+e])-exact))
			if keys[j*d+e] != float32(exact) {
				same = false
			}
		}
		if same {
			exactRows++
		}
	}
	if maxErr > 1 || maxErr == 0 || exactRows > 0 {
		t.Errorf("4-bit reconstruction error %g (want in (0, 1]), %d rows unquantised", maxErr, exactRows)
	}
	if keys[2*c.Window*d] != 100 {
		t.Errorf("the query's own key is %g, want the original 100", keys[2*c.Window*d])
	}
}

// TestMemoryHandExample: kv_dim 32 (4 heads × 8), rk = rv = 8, 4 bits, keys
// per-channel over 32 tokens, values per-token in 4 groups of 2, W = 32.
func TestMemoryHandExample(t *testing.T) {
	c := Config{NKVHeads: 4, HeadDim: 8, KRank: 8, VRank: 8, Window: 32, Mode: kv.WindowBlock,
		K: quant.Spec{Bits: 4, Grouping: quant.PerChannel, GroupSize: 32},
		V: quant.Spec{Bits: 4, Grouping: quant.PerToken, GroupSize: 2}}
	cases := []struct {
		mode kv.WindowMode
		n    int
		want Breakdown
	}{
		// 4096 tokens = 128 whole blocks.
		// originals: the last block, 32 tokens × 32 × (K+V) × 4 bytes     =  8192
		// codes:     K 4096·8·4/8 = 16384, V the same                      = 32768
		// scales+zeros: K (4096/32)·8 = 1024 groups, V 4096·4 = 16384
		//            groups; 4 bytes each: 4096 + 65536                    = 69632
		// total                                                           = 110592
		{kv.WindowBlock, 4096, Breakdown{Tokens: 4096, Originals: 8192, Codes: 32768, ScalesZeros: 69632, Pending: 0, Total: 110592}},
		{kv.WindowSliding, 4096, Breakdown{Tokens: 4096, Originals: 8192, Codes: 32768, ScalesZeros: 69632, Pending: 0, Total: 110592}},
		// 4100 tokens: block mode holds 4 originals (1024 bytes), sliding 32 (8192);
		// K: 4096 stored (16384 codes, 4096 scale/zero) + 4 pending × 8 × 4 = 128;
		// V: 4100·8·4/8 = 16400 codes, 4100·4·4 = 65600 scale/zero.
		{kv.WindowBlock, 4100, Breakdown{Tokens: 4100, Originals: 1024, Codes: 32784, ScalesZeros: 69696, Pending: 128, Total: 103632}},
		{kv.WindowSliding, 4100, Breakdown{Tokens: 4100, Originals: 8192, Codes: 32784, ScalesZeros: 69696, Pending: 128, Total: 110800}},
		{kv.WindowBlock, 0, Breakdown{}},
		// 1 token: 1 original (256 bytes); K pending 32 bytes; V 4 bytes of codes, 16 of scale/zero.
		{kv.WindowBlock, 1, Breakdown{Tokens: 1, Originals: 256, Codes: 4, ScalesZeros: 16, Pending: 32, Total: 308}},
	}
	for _, tc := range cases {
		c.Mode = tc.mode
		if got := Bytes(c, tc.n); got != tc.want {
			t.Errorf("%s, %d tokens: %+v, want %+v", tc.mode, tc.n, got, tc.want)
		}
	}
	if got := PerTokenBaseline(32); got != 128 {
		t.Errorf("baseline %d, want 128", got)
	}
	// 4096 tokens × 128 bytes = 524288 = 128·4096; 110592 = 27·4096.
	c.Mode = kv.WindowBlock
	if got := Ratio(c, 4096); math.Abs(got-128.0/27) > 1e-12 {
		t.Errorf("ratio %g, want 128/27 = %g", got, 128.0/27)
	}
	// A 3-bit stream is not padded per token: 3 tokens × 8 channels × 3 bits = 72 bits = 9 bytes.
	c3 := c
	c3.K = quant.Spec{Bits: 3, Grouping: quant.PerToken, GroupSize: 4}
	c3.V = quant.Spec{Bits: 16}
	if got := Bytes(c3, 3); got.Codes != 9+3*8*2 || got.ScalesZeros != 3*2*4 {
		t.Errorf("3-bit: %+v", got)
	}
	// And the real layer holds exactly that after 4100 appends.
	for _, m := range []kv.WindowMode{kv.WindowBlock, kv.WindowSliding} {
		c.Mode = m
		layer, err := NewLayer(c, make([]float32, 32*8), make([]float32, 32*8))
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(25, 26))
		k := randSlice(rng, 32, 1)
		f := randSlice(rng, 8, 1)
		for i := 0; i < 4100; i++ {
			if err := layer.Append(k, k, f, f); err != nil {
				t.Fatal(err)
			}
			if i+1 == 4096 && layer.AllocatedBytes() != 110592 {
				t.Errorf("%s: 4096 tokens hold %d bytes, want 110592", m, layer.AllocatedBytes())
			}
		}
		if got := layer.AllocatedBytes(); got != Bytes(c, 4100).Total {
			t.Errorf("%s: 4100 tokens hold %d bytes, want %d", m, got, Bytes(c, 4100).Total)
		}
	}
}

func TestBadConfigs(t *testing.T) {
	good := Config{NKVHeads: 2, HeadDim: 4, KRank: 6, VRank: 4, Window: 8, Mode: kv.WindowBlock,
		K: quant.Spec{Bits: 4, Grouping: quant.PerChannel, GroupSize: 8},
		V: quant.Spec{Bits: 4, Grouping: quant.PerToken, GroupSize: 2}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"window 0", func(c *Config) { c.Window = 0 }, "window 0"},
		{"bits 5", func(c *Config) { c.V.Bits = 5 }, "bits 5"},
		{"key group larger than window", func(c *Config) { c.K.GroupSize = 16 }, "group size 16 does not divide window 8"},
		{"key group not dividing window", func(c *Config) { c.K.GroupSize = 3 }, "group size 3 does not divide window 8"},
		{"value group not dividing rank", func(c *Config) { c.V.GroupSize = 3 }, "group size 3 does not divide rank 4"},
		{"group size 0", func(c *Config) { c.K.GroupSize = 0 }, "group size 0"},
		{"rank 0", func(c *Config) { c.KRank = 0 }, "ranks"},
		{"no heads", func(c *Config) { c.NKVHeads = 0 }, "kv heads"},
		{"mode 9", func(c *Config) { c.Mode = 9 }, "mode 9"},
	}
	for _, tc := range cases {
		c := good
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
		if _, err := NewLayer(c, make([]float32, c.KVDim()*c.KRank), make([]float32, c.KVDim()*c.VRank)); err == nil {
			t.Errorf("%s: NewLayer accepted", tc.name)
		}
	}
	if _, err := NewLayer(good, make([]float32, 5), make([]float32, 8*4)); err == nil {
		t.Error("short Bk accepted")
	}
	layer, err := NewLayer(good, make([]float32, 8*6), make([]float32, 8*4))
	if err != nil {
		t.Fatal(err)
	}
	if err := layer.KV(nil, nil); err == nil {
		t.Error("KV of an empty cache accepted")
	}
	if err := layer.Append(make([]float32, 8), make([]float32, 8), make([]float32, 5), make([]float32, 4)); err == nil {
		t.Error("short ck accepted")
	}
	nan := make([]float32, 4)
	nan[2] = float32(math.NaN())
	if err := layer.Append(make([]float32, 8), make([]float32, 8), make([]float32, 6), nan); err == nil {
		t.Error("NaN feature accepted")
	}
	if layer.Len() != 0 || layer.AllocatedBytes() != 0 {
		t.Errorf("failed appends changed the cache: len %d, %d bytes", layer.Len(), layer.AllocatedBytes())
	}
	if err := layer.Append(make([]float32, 8), make([]float32, 8), make([]float32, 6), make([]float32, 4)); err != nil {
		t.Fatal(err)
	}
	if err := layer.KV(make([]float32, 7), make([]float32, 8)); err == nil {
		t.Error("short keys accepted")
	}
}
