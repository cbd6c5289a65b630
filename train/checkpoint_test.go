package train

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/kv"
)

// testFactors are factors of ranks 2/1 for D = 3, KV = 2 filled from seed.
func testFactors(seed float32) kv.Factors {
	fill := func(n int, off float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = seed + off + float32(i)/8
		}
		return v
	}
	return kv.Factors{Ak: fill(6, 0), Bk: fill(4, 1), Av: fill(3, 2), Bv: fill(2, 3), KRank: 2, VRank: 1}
}

// A snapshot survives encode → checkpoints.Save → Load → decode: factors,
// reports, Adam moments and step count, and the sampler's state; the tensor
// names follow the documented schema in order.
func TestSnapshotRoundTrip(t *testing.T) {
	fp := fingerprint{Config: Defaults(), ModelDigest: "m", DataDigest: "d", Layers: 4, Hidden: 3, KVDim: 2, KRanks: []int{2, 2, 2, 2}, VRanks: []int{1, 1, 1, 1}}
	held := graph.Loss{KV: 0.5, KRel: 0.25}
	done := []doneLayer{
		{Factors: testFactors(1), Info: LayerInfo{Layer: 0, KRank: 2, VRank: 1, Init: ASVDInit, HeldBefore: &held, CurveKV: []float64{1, 0.5}, Seconds: 1.5}},
		{Factors: testFactors(2), Info: LayerInfo{Layer: 1, KRank: 2, VRank: 1, Init: ASVDInit, Ridge: 1e-6}},
	}
	rng := rand.NewPCG(3, 4)
	rand.New(rng).IntN(10) // move it off its seed
	cur := &layerState{Step: 7, Factors: testFactors(3), Adam: NewAdam([]int{6, 4, 3, 2}), RNG: rng,
		Info: LayerInfo{Layer: 2, Init: ASVDInit, CurveKV: []float64{3, 2, 1}}}
	cur.Adam.T = 7
	cur.Adam.M[1][2], cur.Adam.V[3][1] = 0.125, 0.5

	for _, c := range []struct {
		name string
		s    snapshot
	}{{"mid-layer", snapshot{fp: fp, done: done, cur: cur}}, {"boundary", snapshot{fp: fp, done: done}}, {"start", snapshot{fp: fp}}} {
		t.Run(c.name, func(t *testing.T) {
			st, err := c.s.encode()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for l := range c.s.done {
				for _, n := range kv.Names {
					names = append(names, finishedPrefix(l)+n)
				}
			}
			if c.s.cur != nil {
				for _, n := range kv.Names {
					names = append(names, "current."+n)
				}
				for i := range kv.Names {
					m, v := adamNames(i)
					names = append(names, m, v)
				}
			}
			var got []string
			for _, ts := range st.Tensors {
				got = append(got, ts.Name)
			}
			if !slices.Equal(got, names) {
				t.Errorf("tensors %v, want %v", got, names)
			}
			if len(c.s.done) == 0 && !strings.Contains(string(st.History), `"history":null`) {
				t.Errorf("no finished layer: history %s, want null as format 1 writes it", st.History)
			}
			path, err := checkpoints.Save(t.TempDir(), st)
			if err != nil {
				t.Fatal(err)
			}
			loaded, err := checkpoints.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			back, err := decodeSnapshot(loaded, path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back.fp, c.s.fp) || !reflect.DeepEqual(back.done, c.s.done) {
				t.Errorf("finished layers or fingerprint differ:\n%+v\n%+v", back, c.s)
			}
			if (back.cur == nil) != (c.s.cur == nil) {
				t.Fatalf("layer in progress: %v, want %v", back.cur, c.s.cur)
			}
			if c.s.cur == nil {
				return
			}
			b, w := back.cur, c.s.cur
			if b.Step != w.Step || !reflect.DeepEqual(b.Factors, w.Factors) || !reflect.DeepEqual(b.Info, w.Info) ||
				b.Adam.T != w.Adam.T || !reflect.DeepEqual(b.Adam.M, w.Adam.M) || !reflect.DeepEqual(b.Adam.V, w.Adam.V) {
				t.Errorf("layer in progress differs:\n%+v\n%+v", b, w)
			}
			if b.RNG.Uint64() != w.RNG.Uint64() {
				t.Error("sampler state differs")
			}
		})
	}
}

// A checkpoint that lacks a tensor or whose reports do not match its layer
// is refused with the checkpoint's path.
func TestSnapshotDecodeErrors(t *testing.T) {
	fp := fingerprint{Config: Defaults(), Layers: 2, Hidden: 3, KVDim: 2, KRanks: []int{2, 2}, VRanks: []int{1, 1}}
	s := snapshot{fp: fp, done: []doneLayer{{Factors: testFactors(1)}}}
	st, err := s.encode()
	if err != nil {
		t.Fatal(err)
	}
	missing := *st
	missing.Tensors = st.Tensors[:3]
	if _, err := decodeSnapshot(&missing, "ck"); err == nil || !strings.Contains(err.Error(), `checkpoint ck lacks tensor "layers.0.Bv"`) {
		t.Errorf("missing tensor: %v", err)
	}
	ahead := *st
	ahead.Layer = 2
	if _, err := decodeSnapshot(&ahead, "ck"); err == nil || !strings.Contains(err.Error(), "at layer 2 with 1 layer reports") {
		t.Errorf("layer ahead of the reports: %v", err)
	}
}
