package spectra

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

func TestGramSingularValuesRankDeficient(t *testing.T) {
	// M (2, 3) = rows (3,0,0), (0,4,0): singular values 4, 3, and only
	// min(n, dim) = 2 of them are reported.
	g := []float64{9, 0, 0, 0, 16, 0, 0, 0, 0}
	s, err := gramSingularValues(g, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 2 || math.Abs(s[0]-4) > 1e-12 || math.Abs(s[1]-3) > 1e-12 {
		t.Errorf("got %v, want [4 3]", s)
	}
}

func TestEnergyKept(t *testing.T) {
	s := []float64{3, 2, 1, 0}
	for _, c := range []struct {
		rank int
		want float64
	}{{-1, 0}, {0, 0}, {1, 9.0 / 14}, {2, 13.0 / 14}, {3, 1}, {9, 1}} {
		if got := EnergyKept(s, c.rank); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("EnergyKept(%v, %d) = %g, want %g", s, c.rank, got, c.want)
		}
	}
	if got := EnergyKept([]float64{0, 0}, 1); got != 1 {
		t.Errorf("EnergyKept of zeros = %g, want 1", got)
	}
}

// TestAnalyzeDirect checks every layer's V cache spectrum (the Gram route,
// blocks of gramRows tokens) against a direct SVD of V = X·Wvᵀ formed by
// plain float64 loops, with more tokens than one Gram block.
func TestAnalyzeDirect(t *testing.T) {
	m, err := model.Synthetic(train.SyntheticSeed)
	if err != nil {
		t.Fatal(err)
	}
	src := data.Source{SeqLen: 100, Seed: data.SyntheticCalibSeed}
	chunks, err := src.Chunks(m, 3) // 300 tokens > gramRows
	if err != nil {
		t.Fatal(err)
	}
	var done []int
	layers, err := Analyze(context.Background(), m, chunks, func(l int) { done = append(done, l) })
	if err != nil {
		t.Fatal(err)
	}
	mc := m.Config
	if len(layers) != mc.Layers || len(done) != mc.Layers {
		t.Fatalf("%d layers, %d callbacks; want %d", len(layers), len(done), mc.Layers)
	}
	D, kv, n := mc.Hidden, mc.KVDim(), 300
	err = train.Capture(context.Background(), m, chunks, func(l int, blk *model.Block, x []float32) error {
		v := make([]float64, n*kv) // (n, KV)
		for i := 0; i < n; i++ {
			for j := 0; j < kv; j++ {
				var acc float64
				for c := 0; c < D; c++ {
					acc += float64(x[i*D+c]) * float64(blk.Wv[j*D+c])
				}
				v[i*kv+j] = acc
			}
		}
		_, want, _, err := linalg.SVD(v, n, kv)
		if err != nil {
			return err
		}
		got := layers[l].S[1]
		if len(got) != len(want) {
			t.Fatalf("layer %d: %d values, want %d", l, len(got), len(want))
		}
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-6*want[0] {
				t.Errorf("layer %d V cache σ_%d: Gram route %.10g, direct SVD %.10g", l, i, got[i], want[i])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	csv := string(SpectraCSV(layers))
	if rows := strings.Count(csv, "\n"); rows != 1+mc.Layers*4*kv {
		t.Errorf("spectra.csv has %d lines, want %d", rows, 1+mc.Layers*4*kv)
	}
	e := string(EnergyCSV(layers, []float64{0.5}, []int{kv / 2}))
	if rows := strings.Count(e, "\n"); rows != 1+mc.Layers*4 {
		t.Errorf("energy.csv has %d lines, want %d", rows, 1+mc.Layers*4)
	}
}
