package model

import (
	"testing"

	"github.com/cskv/cskv/internal/testassets"
	"github.com/cskv/cskv/linalg"
)

// BenchmarkForward measures the frozen forward on stories260K: 4 chunks of
// 512 tokens per iteration; reports tokens/s.
func BenchmarkForward(b *testing.B) {
	m, err := Open(testassets.Path(b, "models/stories260K.gguf"))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	defer linalg.ThreadsFor(m.Config.Hidden)() // as eval and train run it
	seqs := make([][]int, 4)
	for i := range seqs {
		seqs[i] = make([]int, 512)
		for t := range seqs[i] {
			seqs[i][t] = (i*7 + t*13) % m.Config.Vocab
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Forward(seqs, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*4*512)/b.Elapsed().Seconds(), "tokens/s")
}
