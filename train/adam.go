package train

import (
	"math"
	"runtime"
	"sync"

	"github.com/cskv/cskv/graph"
	"github.com/cskv/cskv/linalg"
)

// Adam is the Adam optimiser (PyTorch's formulation) with exported state, so
// that a checkpoint can hold its moments and resume bit-for-bit.
type Adam struct {
	Beta1, Beta2, Eps float64
	T                 int         // steps taken
	M, V              [][]float32 // first and second moments, one per parameter
}

// NewAdam returns Adam with zero moments for parameters of the given sizes.
func NewAdam(sizes []int) *Adam {
	a := &Adam{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
	for _, n := range sizes {
		a.M = append(a.M, make([]float32, n))
		a.V = append(a.V, make([]float32, n))
	}
	return a
}

// Step updates every parameter's Value in place from its Grad with learning
// rate lr.
func (a *Adam) Step(params []graph.Param, lr float64) {
	a.T++
	bc1 := 1 - math.Pow(a.Beta1, float64(a.T))
	bc2 := 1 - math.Pow(a.Beta2, float64(a.T))
	hp := linalg.AdamParams{Beta1: float32(a.Beta1), Beta2: float32(a.Beta2), Eps: float32(a.Eps),
		StepSize: float32(lr / bc1), SqrtBC2: float32(math.Sqrt(bc2))}
	// Each element's update depends on that element alone: large parameters
	// are split between the cores, with the same bits.
	var wg sync.WaitGroup
	for i, p := range params {
		m, v := a.M[i], a.V[i]
		parts := min(runtime.GOMAXPROCS(0), len(p.Grad)/minAdamSplit)
		if parts <= 1 {
			linalg.AdamUpdate(p.Value, p.Grad, m, v, hp)
			continue
		}
		for k := range parts {
			lo, hi := k*len(p.Grad)/parts, (k+1)*len(p.Grad)/parts
			wg.Add(1)
			go func() {
				defer wg.Done()
				linalg.AdamUpdate(p.Value[lo:hi], p.Grad[lo:hi], m[lo:hi], v[lo:hi], hp)
			}()
		}
	}
	wg.Wait()
}

// minAdamSplit is the fewest elements per part of a parameter that Step
// updates on its own core (below it a goroutine costs more than it saves).
const minAdamSplit = 1 << 16

// LRAt is the learning rate at step t (0-based) of total steps: Config.LR,
// or with the cosine schedule a linear warm-up then a cosine decay to 0.
func (c Config) LRAt(t, total int) float64 {
	if c.Schedule != ScheduleCosine {
		return c.LR
	}
	if t < c.Warmup {
		return c.LR * float64(t+1) / float64(c.Warmup)
	}
	span := max(1, total-c.Warmup)
	return c.LR * 0.5 * (1 + math.Cos(math.Pi*float64(t-c.Warmup)/float64(span)))
}
