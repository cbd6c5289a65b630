// Package spectra measures the singular spectra behind CSKV's premise that
// keys and values are low-rank: per decoder layer, the singular values of
// the K cache X·Wkᵀ and the V cache X·Wvᵀ over calibration tokens, and of
// the weights Wk and Wv; the energy a rank keeps; and the CSV files of
// `cskv analyze`.
//
// Shape legend: n tokens, D hidden size, KV key/value width (kv heads ·
// head dim); weights are [out, in], Wk, Wv (KV, D).
package spectra

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"

	"gonum.org/v1/gonum/blas"

	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// Matrices names the four matrices measured per layer, in the order of
// Layer.S, the CSV rows and a plot's legend.
var Matrices = [4]string{"k_cache", "v_cache", "wk", "wv"}

// Legend is the plot legend of each matrix.
var Legend = [4]string{"K cache (X·Wkᵀ)", "V cache (X·Wvᵀ)", "Wk", "Wv"}

// gramRows is how many tokens cacheSpectra converts to float64 at a time
// (8 MiB of X at hidden 4096).
const gramRows = 256

// Layer holds one layer's singular values, each in descending order.
type Layer struct {
	Layer int
	S     [4][]float64 // K cache, V cache, Wk, Wv (order of Matrices)
}

// Analyze walks the layers over the chunks (capturing each layer's
// attention input X and advancing with the original layer, train.Capture)
// and returns the singular values of each layer's K and V caches and of Wk
// and Wv. done, if not nil, is called after each layer.
func Analyze(ctx context.Context, m *model.Model, chunks [][]int, done func(l int)) ([]Layer, error) {
	mc := m.Config
	out := make([]Layer, 0, mc.Layers)
	err := train.Capture(ctx, m, chunks, func(l int, blk *model.Block, x []float32) error {
		ls := Layer{Layer: l}
		var err error
		if ls.S[0], ls.S[1], err = cacheSpectra(x, blk, mc.Hidden, mc.KVDim()); err != nil {
			return err
		}
		for i, w := range [2][]float32{blk.Wk, blk.Wv} {
			if ls.S[2+i], err = weightSpectrum(w, mc.KVDim(), mc.Hidden); err != nil {
				return fmt.Errorf("%s: %w", Matrices[2+i], err)
			}
		}
		out = append(out, ls)
		if done != nil {
			done(l)
		}
		return nil
	})
	return out, err
}

// cacheSpectra returns the singular values (descending, min(n, KV) of
// them) of the K cache X·Wkᵀ and the V cache X·Wvᵀ (n, KV) for x (n, D),
// without the projections' biases (the CSKV factors replace Wk and Wv only)
// and before RoPE (what the compressed cache stores). They are the square
// roots of the eigenvalues of the (KV, KV) Gram matrices KᵀK and VᵀV,
// accumulated in float64 a block of tokens at a time, so the cost is linear
// in the number of tokens and the memory independent of it.
func cacheSpectra(x []float32 /* (n, D) */, blk *model.Block, hidden, kvDim int) (k, v []float64, err error) {
	n := len(x) / hidden
	if n == 0 || len(x) != n*hidden {
		return nil, nil, fmt.Errorf("cache spectra: X has %d values, not a positive multiple of hidden %d", len(x), hidden)
	}
	wk, wv := widen64(blk.Wk), widen64(blk.Wv) // (KV, D)
	gk := make([]float64, kvDim*kvDim)         // (KV, KV) KᵀK, upper triangle
	gv := make([]float64, kvDim*kvDim)         // (KV, KV) VᵀV, upper triangle
	xc := make([]float64, gramRows*hidden)     // (rows, D)
	yc := make([]float64, gramRows*kvDim)      // (rows, KV)
	impl := linalg.BLAS()
	for t0 := 0; t0 < n; t0 += gramRows {
		rows := min(gramRows, n-t0)
		xs := xc[:rows*hidden]
		for i, val := range x[t0*hidden : (t0+rows)*hidden] {
			xs[i] = float64(val)
		}
		for _, p := range [2]struct{ w, g []float64 }{{wk, gk}, {wv, gv}} {
			// Y = Xc·Wᵀ, then G += Yᵀ·Y (upper triangle).
			linalg.Gemm64(false, true, rows, kvDim, hidden, 1, xs, hidden, p.w, hidden, 0, yc, kvDim)
			impl.Dsyrk(blas.Upper, blas.Trans, kvDim, rows, 1, yc[:rows*kvDim], kvDim, 1, p.g, kvDim)
		}
	}
	if k, err = gramSingularValues(gk, kvDim, n); err != nil {
		return nil, nil, fmt.Errorf("k cache: %w", err)
	}
	if v, err = gramSingularValues(gv, kvDim, n); err != nil {
		return nil, nil, fmt.Errorf("v cache: %w", err)
	}
	return k, v, nil
}

// gramSingularValues returns the singular values of an (n, dim) matrix M from
// the upper triangle of its Gram matrix g = MᵀM (dim, dim): the square roots
// of g's eigenvalues, descending, min(n, dim) of them. Eigenvalues that
// rounding made slightly negative are taken as zero.
func gramSingularValues(g []float64 /* (dim, dim) */, dim, n int) ([]float64, error) {
	for i := 0; i < dim; i++ {
		for j := i + 1; j < dim; j++ {
			g[j*dim+i] = g[i*dim+j]
		}
	}
	vals, _, err := linalg.SymEig(g, dim) // ascending
	if err != nil {
		return nil, err
	}
	s := make([]float64, min(n, dim))
	for i := range s {
		s[i] = math.Sqrt(max(0, vals[dim-1-i]))
	}
	return s, nil
}

// weightSpectrum returns the singular values (descending) of a weight
// matrix w (rows, cols), by SVD in float64.
func weightSpectrum(w []float32 /* (rows, cols) */, rows, cols int) ([]float64, error) {
	_, s, _, err := linalg.SVD(widen64(w), rows, cols)
	return s, err
}

// widen64 converts to float64.
func widen64(a []float32) []float64 {
	out := make([]float64, len(a))
	for i, v := range a {
		out[i] = float64(v)
	}
	return out
}

// EnergyKept is the fraction of squared singular values in the top rank:
// Σ_{i<rank} s_i² / Σ s_i². rank is clamped to [0, len(s)]; it returns 1 when
// every singular value is zero.
func EnergyKept(s []float64, rank int) float64 {
	rank = max(0, min(rank, len(s)))
	var kept, total float64
	for i, v := range s {
		total += v * v
		if i < rank {
			kept += v * v
		}
	}
	if total == 0 {
		return 1
	}
	return kept / total
}

// SpectraCSV is spectra.csv: one row per singular value, with the value
// divided by the largest and the cumulative energy Σ_{j≤i} s_j² / Σ s_j².
func SpectraCSV(layers []Layer) []byte {
	var b bytes.Buffer
	b.WriteString("layer,matrix,index,singular_value,normalised,energy_cumulative\n")
	for _, ls := range layers {
		for mi, s := range ls.S {
			var total float64
			for _, v := range s {
				total += v * v
			}
			var cum float64
			for i, v := range s {
				cum += v * v
				norm, frac := 0.0, 1.0
				if s[0] > 0 {
					norm = v / s[0]
				}
				if total > 0 {
					frac = cum / total
				}
				fmt.Fprintf(&b, "%d,%s,%d,%s,%s,%s\n", ls.Layer, Matrices[mi], i,
					csvFloat(v), csvFloat(norm), csvFloat(frac))
			}
		}
	}
	return b.Bytes()
}

// EnergyCSV is energy.csv: the energy kept at each density's rank
// (ranks[i] belongs to densities[i]).
func EnergyCSV(layers []Layer, densities []float64, ranks []int) []byte {
	var b bytes.Buffer
	b.WriteString("layer,matrix,density,rank,energy_kept\n")
	for _, ls := range layers {
		for mi, s := range ls.S {
			for i, dens := range densities {
				fmt.Fprintf(&b, "%d,%s,%s,%d,%s\n", ls.Layer, Matrices[mi], csvFloat(dens), ranks[i],
					csvFloat(EnergyKept(s, ranks[i])))
			}
		}
	}
	return b.Bytes()
}

// csvFloat formats v exactly (shortest representation that parses back to v).
func csvFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
