package graph

import "testing"

func BenchmarkExpShift(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x { x[i] = -float32(i%100) * 0.1 }
	for b.Loop() { expShift(x, 0.5) }
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/exp")
}

func benchAtt(b *testing.B, block int, back bool) {
	s := NewRandomSpec(ShapeStories260K, 1)
	a := newAttention[float32](2, 512, 8, 4, 8, 0, WindowBlock)
	a.block = block
	q := RandomInput(LayerSpec{Seqs: 2, Tokens: 512, Hidden: 64}, 1)
	k := RandomInput(LayerSpec{Seqs: 2, Tokens: 512, Hidden: 32}, 2)
	v := RandomInput(LayerSpec{Seqs: 2, Tokens: 512, Hidden: 32}, 3)
	o := make([]float32, len(q)); dk := make([]float32, len(k)); dv := make([]float32, len(k))
	_ = s
	for b.Loop() {
		a.forward(o, q, k, v, nil, nil)
		if back { a.backward(dk, dv, q, k, v, nil, nil, o, q) }
	}
}
func BenchmarkAttFwd64(b *testing.B) { benchAtt(b, 64, false) }
func BenchmarkAttFwd32(b *testing.B) { benchAtt(b, 32, false) }
func BenchmarkAttFwd16(b *testing.B) { benchAtt(b, 16, false) }
func BenchmarkAttFB64(b *testing.B) { benchAtt(b, 64, true) }
func BenchmarkAttFB32(b *testing.B) { benchAtt(b, 32, true) }

func BenchmarkCalib(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x { x[i] = -float32(i%100) * 0.1 }
	var s float32
	for b.Loop() { for i, v := range x { x[i] = v*1.0001 + 0.5; s += v } }
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/elem")
	_ = s
}
