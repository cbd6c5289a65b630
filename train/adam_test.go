package train

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/cskv/cskv/graph"
)

// TestAdamSplitSameBits: Step on parameters large enough to be split between
// cores gives the bits of Step on one core, over several steps (moments
// included), with part boundaries that do not divide the sizes.
func TestAdamSplitSameBits(t *testing.T) {
	sizes := []int{3*minAdamSplit + 7, 5, 2 * minAdamSplit}
	run := func(procs int) (*Adam, []graph.Param) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		r := rand.New(rand.NewPCG(7, 8))
		var ps []graph.Param
		for _, n := range sizes {
			p := graph.Param{Value: make([]float32, n), Grad: make([]float32, n)}
			for j := range p.Value {
				p.Value[j] = float32(r.NormFloat64())
			}
			ps = append(ps, p)
		}
		a := NewAdam(sizes)
		for step := 0; step < 3; step++ {
			for _, p := range ps {
				for j := range p.Grad {
					p.Grad[j] = float32(r.NormFloat64() * 1e-3)
				}
			}
			a.Step(ps, 1e-3)
		}
		return a, ps
	}
	a1, p1 := run(1)
	for _, procs := range []int{2, 3} {
		a, p := run(procs)
		for i := range sizes {
			for _, pair := range [][2][]float32{{p1[i].Value, p[i].Value}, {a1.M[i], a.M[i]}, {a1.V[i], a.V[i]}} {
				for j := range pair[0] {
					if math.Float32bits(pair[0][j]) != math.Float32bits(pair[1][j]) {
						t.Fatalf("GOMAXPROCS %d: parameter %d element %d: %g, one core %g", procs, i, j, pair[1][j], pair[0][j])
					}
				}
			}
		}
	}
}
