package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cskv/cskv/model/dtype"
)

// ---- an independent float64 reimplementation of the documented rule ----

// f16Near rounds a positive normal-range v to the nearest fp16 value (ties to
// even) using float64 arithmetic only.
func f16Near(v float64) float64 {
	if v >= 65520 {
		return math.Inf(1)
	}
	_, e := math.Frexp(v) // v = f·2^e, f in [0.5, 1)
	if e < -13 {          // below the normal range: spacing of subnormals
		e = -13
	}
	ulp := math.Ldexp(1, e-11) // 11 significant bits
	return math.RoundToEven(v/ulp) * ulp
}

// f16Up is the smallest fp16 value ≥ v (v ≥ 0).
func f16Up(v float64) float64 {
	if v > 65504 {
		return math.Inf(1)
	}
	if v == 0 {
		return 0
	}
	_, e := math.Frexp(v)
	if e < -13 {
		e = -13
	}
	ulp := math.Ldexp(1, e-11)
	return math.Ceil(v/ulp) * ulp
}

type refGroup struct {
	scale, zero float64
	xhat, mask  []float64
	nearTie     []bool // x/scale near a half-integer: float32 division may round across it
	ambiguous   bool   // the group's scale or zero sits near a rounding tie
}

// nearHalf reports whether v is within its float32 rounding reach of k + 0.5.
func nearHalf(v float64) bool {
	frac := v - math.Floor(v)
	return math.Abs(frac-0.5) <= math.Abs(v)*0x1p-22+1e-12
}

func refQuant(x []float64, bits int, clampZero bool) refGroup {
	qmax := math.Exp2(float64(bits)) - 1
	mn, mx := math.Inf(1), math.Inf(-1)
	for _, v := range x {
		mn, mx = math.Min(mn, v), math.Max(mx, v)
	}
	g := refGroup{}
	s := math.Max(mx-mn, float64(float32(1e-5))) / qmax
	if s < 65504 && s >= 0x1p-14 {
		_, e := math.Frexp(s)
		g.ambiguous = nearHalf(s / math.Ldexp(1, e-11)) // fp16 rounding of the scale is a near-tie
	}
	s = f16Near(math.Min(s, 65504))
	if !clampZero {
		s = math.Max(s, f16Up(math.Abs(mn)/2048))
		s = math.Min(s, 65504)
	}
	s = math.Max(s, math.Ldexp(1, -14))
	g.ambiguous = g.ambiguous || nearHalf(mn/s)
	z := -math.RoundToEven(mn / s)
	if clampZero {
		z = math.Max(0, math.Min(qmax, z))
	} else {
		z = math.Max(-2048, math.Min(2048, z))
	}
	g.scale, g.zero = s, z
	lo, hi := (0-z)*s, (qmax-z)*s
	for _, v := range x {
		q := math.Max(0, math.Min(qmax, math.RoundToEven(v/s)+z))
		g.xhat = append(g.xhat, (q-z)*s)
		m := 0.0
		if lo <= v && v <= hi {
			m = 1
		}
		g.mask = append(g.mask, m)
		g.nearTie = append(g.nearTie, nearHalf(v/s))
	}
	return g
}

// groupIndices lists the flat indices of every group, in group order, as the
// package doc defines them (written independently of Spec.group).
func groupIndices(rows, cols int, s Spec) [][]int {
	var out [][]int
	if s.Grouping == PerToken {
		for r := 0; r < rows; r++ {
			for c0 := 0; c0 < cols; c0 += s.GroupSize {
				var g []int
				for c := c0; c < c0+s.GroupSize; c++ {
					g = append(g, r*cols+c)
				}
				out = append(out, g)
			}
		}
		return out
	}
	for r0 := 0; r0 < rows; r0 += s.GroupSize {
		for c := 0; c < cols; c++ {
			var g []int
			for r := r0; r < r0+s.GroupSize; r++ {
				g = append(g, r*cols+c)
			}
			out = append(out, g)
		}
	}
	return out
}

// testData mixes ordinary groups, groups far from zero (large zero points),
// constant groups and tiny ranges.
func testData(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		switch k := i / 7 % 5; k {
		case 0, 1:
			x[i] = float32(rng.NormFloat64() * 2)
		case 2:
			x[i] = float32(37 + rng.NormFloat64()*0.01) // far from zero
		case 3:
			x[i] = -1.25 // constant stretch
		default:
			x[i] = float32(1e-6 * rng.NormFloat64()) // tiny range: fp16 scale floor
		}
	}
	return x
}

// TestFakeQuantAgainstFloat64 compares FakeQuant with the float64 rule.
// Tolerance: x̂ = (code − zero)·scale is exact in float32 (an integer of at
// most 12 bits times an 11-bit fp16 scale), and so are the mask edges, so
// x̂ and the mask must be equal, except where the rule's float32 arithmetic
// may round across a tie that float64 resolves the other way: x/scale within
// |x/scale|·2^-22 of a half-integer, or a group whose scale (before fp16
// rounding) or min/scale sits that close to a tie. There one step (scale) of
// difference and a different mask are allowed; the test counts such elements
// and fails if they are more than 1 in 1000.
func TestFakeQuantAgainstFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	type setting struct {
		rows, cols int
		s          Spec
	}
	var settings []setting
	for _, bits := range []int{2, 3, 4, 8} {
		for _, cz := range []bool{false, true} {
			for _, g := range []int{3, 6, 12} {
				settings = append(settings,
					setting{12, 36, Spec{Bits: bits, Grouping: PerToken, GroupSize: g, ClampZero: cz}},
					setting{36, 10, Spec{Bits: bits, Grouping: PerChannel, GroupSize: g, ClampZero: cz}})
			}
		}
	}
	nearTies, total := 0, 0
	for _, st := range settings {
		name := fmt.Sprintf("%v/%dx%d", st.s, st.rows, st.cols)
		x := testData(rng, st.rows*st.cols)
		dst := make([]float32, len(x))
		mask := make([]float32, len(x))
		if err := FakeQuant(dst, mask, x, st.rows, st.cols, st.s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, idx := range groupIndices(st.rows, st.cols, st.s) {
			xs := make([]float64, len(idx))
			for i, j := range idx {
				xs[i] = float64(x[j])
			}
			ref := refQuant(xs, st.s.Bits, st.s.ClampZero)
			for i, j := range idx {
				total++
				got := float64(dst[j])
				if got == ref.xhat[i] && float64(mask[j]) == ref.mask[i] {
					continue
				}
				if (ref.nearTie[i] || ref.ambiguous) && math.Abs(got-ref.xhat[i]) <= ref.scale*(1+0x1p-9) {
					nearTies++
					continue
				}
				t.Fatalf("%s: element %d (x = %g): x̂ = %g mask %g, want %g mask %g (scale %g zero %g)",
					name, j, x[j], got, mask[j], ref.xhat[i], ref.mask[i], ref.scale, ref.zero)
			}
		}
	}
	if nearTies*1000 > total {
		t.Errorf("%d of %d elements differ at near-ties", nearTies, total)
	}
	t.Logf("%d elements compared, %d near-tie differences", total, nearTies)
}

// Inside the range the error is at most half a step (a property of the
// formula itself, not of the reimplementation).
func TestErrorWithinHalfStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, bits := range []int{2, 3, 4, 8} {
		s := Spec{Bits: bits, Grouping: PerToken, GroupSize: 6}
		x := testData(rng, 8*24)
		dst := make([]float32, len(x))
		mask := make([]float32, len(x))
		if err := FakeQuant(dst, mask, x, 8, 24, s); err != nil {
			t.Fatal(err)
		}
		c, err := Quantize(x, 8, 24, s)
		if err != nil {
			t.Fatal(err)
		}
		inside := 0
		for j := range x {
			scale := float64(dtype.F16ToF32(c.Scale[j/6]))
			e := math.Abs(float64(dst[j]) - float64(x[j]))
			if mask[j] == 1 {
				inside++
				if e > scale*(0.5+0x1p-10) { // x/scale is rounded to float32 first: up to 2300·2^-24 steps
					t.Fatalf("bits %d: |x̂ − x| = %g > scale/2 = %g at %d", bits, e, scale/2, j)
				}
			} else if e > scale*1.5 { // free zero: only the rounding of min/max can fall outside
				t.Fatalf("bits %d: outside the range by %g (scale %g) at %d", bits, e, scale, j)
			}
		}
		if inside < len(x)/2 { // not vacuous: most elements are inside
			t.Errorf("bits %d: only %d of %d inside the range", bits, inside, len(x))
		}
	}
}

// TestMaskEdges builds groups whose scale is 1 and checks the inclusive edges
// exactly, including values outside the range (possible with ClampZero, and in
// the free mode when round(min/scale) rounds up).
func TestMaskEdges(t *testing.T) {
	up := func(v float32) float32 { return math.Nextafter32(v, float32(math.Inf(1))) }
	down := func(v float32) float32 { return math.Nextafter32(v, float32(math.Inf(-1))) }
	cases := []struct {
		name string
		s    Spec
		x    []float32
		xhat []float32
		mask []float32
	}{
		{ // range [0, 15]: zero 0; both edges inside; ties go to even
			"free exact edges", Spec{Bits: 4, GroupSize: 6},
			[]float32{0, 15, 2.5, 3.5, 7.25, 14.5},
			[]float32{0, 15, 2, 4, 7, 14},
			[]float32{1, 1, 1, 1, 1, 1},
		},
		{ // min −0.3: zero = −round(−0.3) = 0, so lo = 0 > min: min is outside
			"free min outside", Spec{Bits: 4, GroupSize: 3},
			[]float32{-0.3, 14.7, 7},
			[]float32{0, 15, 7},
			[]float32{0, 1, 1},
		},
		{ // [1, 16]: zero −1 clamped to 0, range [0, 15]; 15 inside, just above it outside
			"clamped above", Spec{Bits: 4, GroupSize: 6, ClampZero: true},
			[]float32{1, 16, 15, up(15), 2, 8},
			[]float32{1, 15, 15, 15, 2, 8},
			[]float32{1, 0, 1, 0, 1, 1},
		},
		{ // [−16, −1]: zero 16 clamped to 15, range [−15, 0]; −15 inside, just below outside
			"clamped below", Spec{Bits: 4, GroupSize: 6, ClampZero: true},
			[]float32{-16, -1, -15, down(-15), -2, -8},
			[]float32{-15, -1, -15, -15, -2, -8},
			[]float32{0, 1, 1, 0, 1, 1},
		},
		{ // 2 bits, [−1.5, 1.5]: scale 1, zero = −round(−1.5) = 2 (ties to even), range [−2, 1]
			"2-bit tie", Spec{Bits: 2, GroupSize: 4},
			[]float32{-1.5, 1.5, 1, up(1)},
			[]float32{-2, 1, 1, 1},
			[]float32{1, 0, 1, 0},
		},
		{ // per-channel, same first group along a column
			"per-channel", Spec{Bits: 4, Grouping: PerChannel, GroupSize: 3, ClampZero: true},
			[]float32{1, 16, up(15)},
			[]float32{1, 15, 15},
			[]float32{1, 0, 0},
		},
	}
	for _, c := range cases {
		rows, cols := 1, len(c.x)
		if c.s.Grouping == PerChannel {
			rows, cols = cols, 1
		}
		dst := make([]float32, len(c.x))
		mask := make([]float32, len(c.x))
		if err := FakeQuant(dst, mask, c.x, rows, cols, c.s); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for i := range c.x {
			if dst[i] != c.xhat[i] || mask[i] != c.mask[i] {
				t.Errorf("%s: x = %v: x̂ = %v mask %v, want %v mask %v", c.name, c.x[i], dst[i], mask[i], c.xhat[i], c.mask[i])
			}
		}
	}
}

func TestBits16Identity(t *testing.T) {
	x := []float32{1.5, -2, 3e30, 0, 1e-40, 7}
	s := Spec{Bits: 16}
	dst := make([]float32, len(x))
	mask := []float32{0, 0, 0, 0, 0, 0}
	if err := FakeQuant(dst, mask, x, 2, 3, s); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if dst[i] != x[i] || mask[i] != 1 {
			t.Errorf("element %d: %g mask %g, want %g mask 1", i, dst[i], mask[i], x[i])
		}
	}
	if _, err := Quantize(x, 2, 3, s); err == nil {
		t.Error("Quantize with bits 16 accepted")
	}
}

// dst may alias x.
func TestAlias(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, s := range []Spec{{Bits: 3, GroupSize: 4}, {Bits: 4, Grouping: PerChannel, GroupSize: 3}} {
		x := testData(rng, 6*8)
		want := make([]float32, len(x))
		if err := FakeQuant(want, nil, x, 6, 8, s); err != nil {
			t.Fatal(err)
		}
		if err := FakeQuant(x, nil, x, 6, 8, s); err != nil {
			t.Fatal(err)
		}
		for i := range x {
			if x[i] != want[i] {
				t.Fatalf("%v: aliased result differs at %d: %g vs %g", s, i, x[i], want[i])
			}
		}
	}
}

func TestConstantAndDegenerateGroups(t *testing.T) {
	cases := []struct {
		v     float32
		exact bool // reproduced exactly in the free mode
	}{{0, true}, {1, true}, {-1.25, true}, {100, true}, {1e-3, false}, {-37.123, false}, {60000, false}, {1e6, false}, {-3e38, false}}
	for _, bits := range []int{2, 4, 8} {
		for _, cz := range []bool{false, true} {
			for _, c := range cases {
				s := Spec{Bits: bits, GroupSize: 4, ClampZero: cz}
				x := []float32{c.v, c.v, c.v, c.v}
				dst := make([]float32, 4)
				mask := make([]float32, 4)
				if err := FakeQuant(dst, mask, x, 1, 4, s); err != nil {
					t.Fatal(err)
				}
				codes, err := Quantize(x, 1, 4, s)
				if err != nil {
					t.Fatal(err)
				}
				scale := dtype.F16ToF32(codes.Scale[0])
				zero := dtype.F16ToF32(codes.Zero[0])
				for i, d := range dst {
					if math.IsNaN(float64(d)) || math.IsInf(float64(d), 0) || math.IsInf(float64(scale), 0) || math.IsInf(float64(zero), 0) {
						t.Fatalf("%v constant %g: x̂ %g scale %g zero %g", s, c.v, d, scale, zero)
					}
					if cz {
						continue // the clamped zero forces 0 into the range: no accuracy promise
					}
					if c.exact && d != c.v {
						t.Errorf("%v constant %g: x̂[%d] = %g", s, c.v, i, d)
					}
					if math.Abs(float64(c.v)) <= 65504 && math.Abs(float64(d-c.v)) > float64(scale)/2 {
						t.Errorf("%v constant %g: x̂ = %g off by more than half a step %g", s, c.v, d, scale)
					}
				}
			}
		}
	}
	// Range overflow in float32 and values near the float32 limit stay finite.
	x := []float32{-3e38, 3e38, 0}
	dst := make([]float32, 3)
	if err := FakeQuant(dst, nil, x, 1, 3, Spec{Bits: 4, GroupSize: 3}); err != nil {
		t.Fatal(err)
	}
	for _, d := range dst {
		if math.IsNaN(float64(d)) || math.IsInf(float64(d), 0) {
			t.Fatalf("huge range: %v", dst)
		}
	}
	// A tiny range gets the smallest normal fp16 scale (0x0400 = 2^-14).
	c, err := Quantize([]float32{0, 1e-6, 2e-6}, 1, 3, Spec{Bits: 4, GroupSize: 3})
	if err != nil || c.Scale[0] != 0x0400 {
		t.Errorf("tiny range: scale %#04x, %v", c.Scale, err)
	}
	// The free zero point stays within ±2048 (exact in fp16).
	c, err = Quantize([]float32{500, 500.01, 500.02}, 1, 3, Spec{Bits: 8, GroupSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if z := dtype.F16ToF32(c.Zero[0]); math.Abs(float64(z)) > 2048 || z != float32(math.Trunc(float64(z))) {
		t.Errorf("far group: zero %g", z)
	}
	// Non-finite input is an error.
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		if err := FakeQuant(make([]float32, 3), nil, []float32{1, bad, 2}, 1, 3, Spec{Bits: 4, GroupSize: 3}); err == nil {
			t.Errorf("input %g accepted", bad)
		}
	}
}

// FakeQuant equals Dequantize(Quantize(x)) bit for bit.
func TestFakeQuantEqualsRealCache(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, bits := range []int{2, 3, 4, 8} {
		for _, s := range []Spec{
			{Bits: bits, Grouping: PerToken, GroupSize: 5},
			{Bits: bits, Grouping: PerToken, GroupSize: 5, ClampZero: true},
			{Bits: bits, Grouping: PerChannel, GroupSize: 6},
			{Bits: bits, Grouping: PerChannel, GroupSize: 3, ClampZero: true},
		} {
			x := testData(rng, 12*15)
			fq := make([]float32, len(x))
			if err := FakeQuant(fq, nil, x, 12, 15, s); err != nil {
				t.Fatal(err)
			}
			c, err := Quantize(x, 12, 15, s)
			if err != nil {
				t.Fatal(err)
			}
			// Through the packed form, as the cache stores it.
			packed, err := Pack(c.Q, bits)
			if err != nil {
				t.Fatal(err)
			}
			c.Q = make([]uint8, len(x))
			if err := Unpack(c.Q, packed, bits); err != nil {
				t.Fatal(err)
			}
			dq := make([]float32, len(x))
			if err := Dequantize(dq, c); err != nil {
				t.Fatal(err)
			}
			for i := range fq {
				if math.Float32bits(fq[i]) != math.Float32bits(dq[i]) {
					t.Fatalf("%v: element %d: fake %g, real %g", s, i, fq[i], dq[i])
				}
			}
		}
	}
}

// Per-channel groups of x equal per-token groups of xᵀ, transposed.
func TestTransposeSymmetry(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	const T, R = 12, 7
	for _, g := range []int{3, 4, 6, 12} {
		for _, bits := range []int{2, 4} {
			x := testData(rng, T*R)
			xt := make([]float32, T*R)
			for i := 0; i < T; i++ {
				for j := 0; j < R; j++ {
					xt[j*T+i] = x[i*R+j]
				}
			}
			a := make([]float32, T*R)
			am := make([]float32, T*R)
			b := make([]float32, T*R)
			bm := make([]float32, T*R)
			if err := FakeQuant(a, am, x, T, R, Spec{Bits: bits, Grouping: PerChannel, GroupSize: g}); err != nil {
				t.Fatal(err)
			}
			if err := FakeQuant(b, bm, xt, R, T, Spec{Bits: bits, Grouping: PerToken, GroupSize: g}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < T; i++ {
				for j := 0; j < R; j++ {
					if a[i*R+j] != b[j*T+i] || am[i*R+j] != bm[j*T+i] {
						t.Fatalf("g %d bits %d: (%d, %d): per-channel %g, per-token of transpose %g", g, bits, i, j, a[i*R+j], b[j*T+i])
					}
				}
			}
		}
	}
}

func TestInvalidSpecs(t *testing.T) {
	cases := []struct {
		s          Spec
		rows, cols int
		want       string // substring of the error
	}{
		{Spec{Bits: 5, GroupSize: 4}, 2, 4, "bits 5"},
		{Spec{Bits: 0, GroupSize: 4}, 2, 4, "bits 0"},
		{Spec{Bits: 1, GroupSize: 4}, 2, 4, "bits 1"},
		{Spec{Bits: 32, GroupSize: 4}, 2, 4, "bits 32"},
		{Spec{Bits: 4, GroupSize: 0}, 2, 4, "group size 0"},
		{Spec{Bits: 4, Grouping: 7, GroupSize: 2}, 2, 4, "grouping 7"},
		{Spec{Bits: 4, Grouping: PerToken, GroupSize: 3}, 2, 4, "group size 3 does not divide 4 columns"},
		{Spec{Bits: 4, Grouping: PerChannel, GroupSize: 3}, 4, 2, "group size 3 does not divide 4 rows"},
	}
	for _, c := range cases {
		err := FakeQuant(make([]float32, c.rows*c.cols), nil, make([]float32, c.rows*c.cols), c.rows, c.cols, c.s)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to mention %q", c.s, err, c.want)
		}
		if _, err := Quantize(make([]float32, c.rows*c.cols), c.rows, c.cols, c.s); err == nil {
			t.Errorf("%+v: Quantize accepted", c.s)
		}
	}
	if err := (Spec{Bits: 16}).Validate(); err != nil {
		t.Errorf("bits 16: %v", err)
	}
	if err := FakeQuant(make([]float32, 3), nil, make([]float32, 4), 2, 2, Spec{Bits: 4, GroupSize: 2}); err == nil {
		t.Error("short dst accepted")
	}
	if err := FakeQuant(make([]float32, 4), make([]float32, 3), make([]float32, 4), 2, 2, Spec{Bits: 4, GroupSize: 2}); err == nil {
		t.Error("short mask accepted")
	}
	c, _ := Quantize(make([]float32, 4), 2, 2, Spec{Bits: 2, GroupSize: 2})
	c.Q[1] = 4
	if err := Dequantize(make([]float32, 4), c); err == nil {
		t.Error("out-of-range code accepted")
	}
	c.Q[1] = 0
	c.Scale = c.Scale[:1]
	if err := Dequantize(make([]float32, 4), c); err == nil {
		t.Error("missing scales accepted")
	}
}

func TestGroups(t *testing.T) {
	n, err := Spec{Bits: 4, Grouping: PerChannel, GroupSize: 32}.Groups(4096, 8)
	if err != nil || n != 1024 {
		t.Errorf("per-channel groups %d, %v; want 1024", n, err)
	}
	n, err = Spec{Bits: 4, Grouping: PerToken, GroupSize: 2}.Groups(4096, 8)
	if err != nil || n != 16384 {
		t.Errorf("per-token groups %d, %v; want 16384", n, err)
	}
}
