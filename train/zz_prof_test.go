package train

import (
	"fmt"
	"testing"
	"time"

	"github.com/cskv/cskv/graph"
)

func TestZZAdam(t *testing.T) {
	sizes := []int{512 * 4096, 1024 * 512, 512 * 4096, 1024 * 512}
	var ps []graph.Param
	for _, n := range sizes {
		ps = append(ps, graph.Param{Value: make([]float32, n), Grad: make([]float32, n)})
	}
	a := NewAdam(sizes)
	a.Step(ps, 1e-5)
	best := 1e9
	for i := 0; i < 5; i++ {
		t0 := time.Now()
		a.Step(ps, 1e-5)
		best = min(best, time.Since(t0).Seconds())
	}
	fmt.Printf("adam %.2f ms\n", best*1e3)
}
