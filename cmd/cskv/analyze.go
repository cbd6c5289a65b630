package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/sirupsen/logrus"
	"gonum.org/v1/gonum/blas"

	"github.com/cskv/cskv/atomicfile"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/report"
	"github.com/cskv/cskv/train"
)

// spectrumMatrices names the four matrices analyze measures per layer, in
// the order of the CSV rows and the plot's legend.
var spectrumMatrices = [4]string{"k_cache", "v_cache", "wk", "wv"}

// spectrumLegend is the plot legend of each matrix.
var spectrumLegend = [4]string{"K cache (X·Wkᵀ)", "V cache (X·Wvᵀ)", "Wk", "Wv"}

// spectrumGramRows is how many tokens cacheSpectra converts to float64 at a
// time (8 MiB of X at hidden 4096).
const spectrumGramRows = 256

// layerSpectra holds one layer's singular values, each in descending order.
type layerSpectra struct {
	Layer int
	S     [4][]float64 // K cache, V cache, Wk, Wv (order of spectrumMatrices)
}

func runAnalyze(ctx context.Context, args []string) error {
	fs := newFlagSet("analyze", "[--model M --data T] --out DIR [flags]")
	var lf logFlags
	lf.register(fs)
	var d dataFlags
	modelPath := modelFlag(fs)
	d.register(fs, "calibration", "calib-chunks", 16, "calibration sequences: the first consecutive chunks of the data (0 = all)")
	out := fs.String("out", "", "output directory for spectra.csv, energy.csv and layer-N-spectrum.png (required)")
	densList := fs.String("densities", "0.5,0.25,0.125", "comma-separated densities in (0, 1) at which to report the energy kept; rank = int(density·head_dim)·kv_heads")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := lf.logger()
	if err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out DIR is required", errUsage)
	}
	densities, err := parseDensities(*densList)
	if err != nil {
		return err
	}
	if d.chunks < 0 {
		return fmt.Errorf("%w: --calib-chunks %d: must be ≥ 0", errUsage, d.chunks)
	}
	m, err := openModel(*modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	mc := m.Config
	ranks := make([]int, len(densities))
	for i, dens := range densities {
		if ranks[i], err = train.RankFromDensity(dens, mc.HeadDim, mc.KVHeads); err != nil {
			return fmt.Errorf("%w: --densities: %v", errUsage, err)
		}
	}
	if isSynthetic(m) && !flagSet(fs, "seq-len") {
		d.seqLen = syntheticSeqLen
	}
	log.WithField("model", describe(m)).Info("model loaded")
	chunks, err := loadChunks(m, d, train.SyntheticCalibSeed, 16)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	log.WithFields(logrus.Fields{"chunks": len(chunks), "seq_len": d.seqLen, "layers": mc.Layers}).Info("capturing")

	bar := lf.bar(mc.Layers, "layers")
	spectra, err := analyzeSpectra(ctx, m, chunks, func(l int) {
		log.WithField("layer", l).Debug("layer analysed")
		if bar != nil {
			bar.Add(1)
		}
	})
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}

	if err := atomicfile.Write(filepath.Join(*out, "spectra.csv"), spectraCSV(spectra)); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(*out, "energy.csv"), energyCSV(spectra, densities, ranks)); err != nil {
		return err
	}
	name := filepath.Base(m.Path)
	if isSynthetic(m) {
		name = "synthetic model"
	}
	for _, ls := range spectra {
		series := make([]report.Series, len(spectrumMatrices))
		for i := range series {
			series[i] = report.Series{Name: spectrumLegend[i], Values: ls.S[i]}
		}
		p := filepath.Join(*out, fmt.Sprintf("layer-%d-spectrum.png", ls.Layer))
		title := fmt.Sprintf("%s, layer %d: singular values (%d tokens)", name, ls.Layer, len(chunks)*d.seqLen)
		if err := report.SpectrumPNG(p, title, series); err != nil {
			return err
		}
	}
	log.WithField("out", *out).Info("spectra written")

	fmt.Printf("model   %s\n", describe(m))
	fmt.Printf("tokens  %d (%d chunks of %d)\n", len(chunks)*d.seqLen, len(chunks), d.seqLen)
	fmt.Printf("output  %s (spectra.csv, energy.csv, layer-N-spectrum.png)\n\n", *out)
	fmt.Println("energy kept Σ_{i<rank} s_i² / Σ s_i² of the K and V caches:")
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	hdr := []string{"layer"}
	for _, side := range []string{"K", "V"} {
		for i, dens := range densities {
			hdr = append(hdr, fmt.Sprintf("%s@%g (r=%d)", side, dens, ranks[i]))
		}
	}
	fmt.Fprintln(w, strings.Join(hdr, "\t"))
	for _, ls := range spectra {
		row := []string{strconv.Itoa(ls.Layer)}
		for side := 0; side < 2; side++ {
			for _, r := range ranks {
				row = append(row, fmt.Sprintf("%.2f%%", 100*report.EnergyKept(ls.S[side], r)))
			}
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	return w.Flush()
}

// parseDensities parses the --densities list: each in (0, 1).
func parseDensities(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: --densities: %q is not a number", errUsage, f)
		}
		if !(v > 0 && v < 1) {
			return nil, fmt.Errorf("%w: --densities: %v is outside (0, 1)", errUsage, v)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: --densities %q: no density given", errUsage, s)
	}
	return out, nil
}

// analyzeSpectra walks the layers over the chunks (capturing each layer's
// attention input X and advancing with the original layer) and returns the
// singular values of each layer's K and V caches and of Wk and Wv. done is
// called after each layer.
func analyzeSpectra(ctx context.Context, m *model.Model, chunks [][]int, done func(l int)) ([]layerSpectra, error) {
	mc := m.Config
	out := make([]layerSpectra, 0, mc.Layers)
	err := train.Capture(ctx, m, chunks, func(l int, blk *model.Block, x []float32) error {
		ls := layerSpectra{Layer: l}
		var err error
		if ls.S[0], ls.S[1], err = cacheSpectra(x, blk, mc.Hidden, mc.KVDim()); err != nil {
			return err
		}
		for i, w := range [2][]float32{blk.Wk, blk.Wv} {
			if ls.S[2+i], err = weightSpectrum(w, mc.KVDim(), mc.Hidden); err != nil {
				return fmt.Errorf("%s: %w", spectrumMatrices[2+i], err)
			}
		}
		out = append(out, ls)
		done(l)
		return nil
	})
	return out, err
}

// cacheSpectra returns the singular values (descending, min(n, kvDim) of
// them) of the K cache X·Wkᵀ and the V cache X·Wvᵀ (n, kvDim) for
// x (n, hidden), without the projections' biases (the CSKV factors replace
// Wk and Wv only) and before RoPE (what the compressed cache stores). They
// are the square roots of the eigenvalues of the (kvDim, kvDim) Gram
// matrices KᵀK and VᵀV, accumulated in float64 a block of tokens at a time,
// so the cost is linear in the number of tokens and the memory independent
// of it.
func cacheSpectra(x []float32 /* (n, hidden) */, blk *model.Block, hidden, kvDim int) (k, v []float64, err error) {
	n := len(x) / hidden
	if n == 0 || len(x) != n*hidden {
		return nil, nil, fmt.Errorf("cache spectra: X has %d values, not a positive multiple of hidden %d", len(x), hidden)
	}
	wk, wv := widen64(blk.Wk), widen64(blk.Wv)     // (kvDim, hidden)
	gk := make([]float64, kvDim*kvDim)             // (kvDim, kvDim) KᵀK, upper triangle
	gv := make([]float64, kvDim*kvDim)             // (kvDim, kvDim) VᵀV, upper triangle
	xc := make([]float64, spectrumGramRows*hidden) // (rows, hidden)
	yc := make([]float64, spectrumGramRows*kvDim)  // (rows, kvDim)
	impl := linalg.BLAS()
	for t0 := 0; t0 < n; t0 += spectrumGramRows {
		rows := min(spectrumGramRows, n-t0)
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

// spectraCSV is spectra.csv: one row per singular value, with the value
// divided by the largest and the cumulative energy Σ_{j≤i} s_j² / Σ s_j².
func spectraCSV(spectra []layerSpectra) []byte {
	var b bytes.Buffer
	b.WriteString("layer,matrix,index,singular_value,normalised,energy_cumulative\n")
	for _, ls := range spectra {
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
				fmt.Fprintf(&b, "%d,%s,%d,%s,%s,%s\n", ls.Layer, spectrumMatrices[mi], i,
					csvFloat(v), csvFloat(norm), csvFloat(frac))
			}
		}
	}
	return b.Bytes()
}

// energyCSV is energy.csv: the energy kept at each density's rank.
func energyCSV(spectra []layerSpectra, densities []float64, ranks []int) []byte {
	var b bytes.Buffer
	b.WriteString("layer,matrix,density,rank,energy_kept\n")
	for _, ls := range spectra {
		for mi, s := range ls.S {
			for i, dens := range densities {
				fmt.Fprintf(&b, "%d,%s,%s,%d,%s\n", ls.Layer, spectrumMatrices[mi], csvFloat(dens), ranks[i],
					csvFloat(report.EnergyKept(s, ranks[i])))
			}
		}
	}
	return b.Bytes()
}

// csvFloat formats v exactly (shortest representation that parses back to v).
func csvFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
