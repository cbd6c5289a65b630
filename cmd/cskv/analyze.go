package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/atomicfile"
	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/internal/plot"
	"github.com/cskv/cskv/spectra"
	"github.com/cskv/cskv/train"
)

// analyzeChunks is the default number of calibration chunks (and of
// sequences sampled from the synthetic model).
const analyzeChunks = 16

func runAnalyze(ctx context.Context, c *cli, args []string) error {
	var d dataFlags
	modelPath := modelFlag(c.FlagSet)
	d.register(c.FlagSet, "calibration", "calib-chunks", analyzeChunks, "calibration sequences: the first consecutive chunks of the data (0 = all)")
	out := c.String("out", "", "output directory for spectra.csv, energy.csv and layer-N-spectrum.png (required)")
	densList := c.String("densities", "0.5,0.25,0.125", "comma-separated densities in (0, 1) at which to report the energy kept; rank = int(density·head_dim)·kv_heads")
	log, err := c.start(args)
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
	m, chunks, err := d.open(c.FlagSet, log, *modelPath, data.SyntheticCalibSeed, analyzeChunks)
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
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	log.WithFields(logrus.Fields{"chunks": len(chunks), "seq_len": d.seqLen, "layers": mc.Layers}).Info("capturing")

	bar := c.lf.bar(mc.Layers, "layers")
	layers, err := spectra.Analyze(ctx, m, chunks, func(l int) {
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

	if err := atomicfile.Write(filepath.Join(*out, "spectra.csv"), spectra.SpectraCSV(layers)); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(*out, "energy.csv"), spectra.EnergyCSV(layers, densities, ranks)); err != nil {
		return err
	}
	name := filepath.Base(m.Path)
	if m.Synthetic() {
		name = "synthetic model"
	}
	for _, ls := range layers {
		series := make([]plot.Series, len(spectra.Matrices))
		for i := range series {
			series[i] = plot.Series{Name: spectra.Legend[i], Values: ls.S[i]}
		}
		p := filepath.Join(*out, fmt.Sprintf("layer-%d-spectrum.png", ls.Layer))
		title := fmt.Sprintf("%s, layer %d: singular values (%d tokens)", name, ls.Layer, len(chunks)*d.seqLen)
		if err := plot.SpectrumPNG(p, title, series); err != nil {
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
	for _, ls := range layers {
		row := []string{strconv.Itoa(ls.Layer)}
		for side := 0; side < 2; side++ {
			for _, r := range ranks {
				row = append(row, fmt.Sprintf("%.2f%%", 100*spectra.EnergyKept(ls.S[side], r)))
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
