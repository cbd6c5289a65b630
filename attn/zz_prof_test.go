package attn

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/linalg"
)

func TestZZAttn(t *testing.T) {
	p := linalg.F32
	if os.Getenv("PREC") == "bf16" {
		p = linalg.BF16
	}
	linalg.SetPrecision(p)
	T, H, KVH, Dh := 2048, 32, 8, 128
	a := New[float32](1, T, Rule{Heads: H, KVHeads: KVH, HeadDim: Dh}, 0, kv.WindowBlock)
	a.Keep = true
	rnd := func(n int, s uint32) []float32 {
		v := make([]float32, n)
		for i := range v {
			s = s*1664525 + 1013904223
			v[i] = float32(int32(s)>>8) / float32(1<<23) * 0.3
		}
		return v
	}
	q, k, v := rnd(T*H*Dh, 1), rnd(T*KVH*Dh, 2), rnd(T*KVH*Dh, 3)
	o, do := make([]float32, len(q)), rnd(len(q), 4)
	dk, dv := make([]float32, len(k)), make([]float32, len(k))
	tm := func(name string, flop float64, f func()) {
		f()
		var ts []float64
		for i := 0; i < 5; i++ {
			t0 := time.Now()
			f()
			ts = append(ts, time.Since(t0).Seconds()*1e3)
		}
		fmt.Printf("%-10s %6.1f ms  (%.0f GFLOP/s counted)\n", name, ts, flop/ts[2]/1e6)
	}
	qd := float64(H * Dh)
	tm("forward", 2*float64(T*T)*qd, func() { a.Forward(o, q, k, v, nil, nil) })
	if os.Getenv("BWD") != "" {
		for i := 0; i < 10; i++ {
			a.Backward(dk, dv, q, k, v, nil, nil, o, do)
		}
	}
	if os.Getenv("FWD") != "" {
		return
	}
	tm("backward", 3*float64(T*T)*qd, func() { a.Backward(dk, dv, q, k, v, nil, nil, o, do) })
}
