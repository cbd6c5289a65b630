package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cskv/cskv/data"
	"github.com/cskv/cskv/internal/plot"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/spectra"
	"github.com/cskv/cskv/train"
)

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rows
}

func parseF(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestAnalyzeSynthetic runs the command on the synthetic model and checks
// its files against independent references: the K cache spectrum of one
// layer against a direct SVD of K = X·Wkᵀ (X captured here, K formed by
// plain loops in float64), the weight spectra against the model's Wk/Wv, and
// the CSV's derived columns against their definitions.
func TestAnalyzeSynthetic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	const seqLen, chunks = 16, 3
	args := []string{"--quiet", "--out", dir, "--seq-len", strconv.Itoa(seqLen), "--calib-chunks", strconv.Itoa(chunks),
		"--densities", "0.5,0.25"}
	if err := runAnalyze(context.Background(), newCLI("analyze", ""), args); err != nil {
		t.Fatal(err)
	}
	m, err := model.Synthetic(train.SyntheticSeed)
	if err != nil {
		t.Fatal(err)
	}
	mc := m.Config
	kv := mc.KVDim()
	nTok := seqLen * chunks // 48 tokens > kvDim 16: min(n, kvDim) = kvDim values per cache

	// spectra.csv: header, then Layers × 4 matrices × kvDim rows (Wk, Wv are
	// (kvDim, hidden) with kvDim < hidden, so kvDim values too).
	rows := readCSV(t, filepath.Join(dir, "spectra.csv"))
	if got := strings.Join(rows[0], ","); got != "layer,matrix,index,singular_value,normalised,energy_cumulative" {
		t.Fatalf("spectra.csv header %q", got)
	}
	if want := 1 + mc.Layers*4*kv; len(rows) != want {
		t.Fatalf("spectra.csv has %d rows, want %d", len(rows), want)
	}
	sv := map[string][]float64{} // "layer/matrix" → singular values
	for i, r := range rows[1:] {
		key := r[0] + "/" + r[1]
		if idx, _ := strconv.Atoi(r[2]); idx != len(sv[key]) {
			t.Fatalf("row %d: index %s, want %d", i+1, r[2], len(sv[key]))
		}
		s := parseF(t, r[3])
		sv[key] = append(sv[key], s)
		vals := sv[key]
		if n := parseF(t, r[4]); math.Abs(n-s/vals[0]) > 1e-12 {
			t.Errorf("row %d: normalised %v, want %v", i+1, n, s/vals[0])
		}
		if len(vals) > 1 && s > vals[len(vals)-2]*(1+1e-12) {
			t.Errorf("%s: singular values not descending at index %d", key, len(vals)-1)
		}
	}
	for l := 0; l < mc.Layers; l++ {
		for _, name := range spectra.Matrices {
			key := fmt.Sprintf("%d/%s", l, name)
			vals := sv[key]
			if len(vals) != kv {
				t.Fatalf("%s: %d values, want %d", key, len(vals), kv)
			}
			// The last cumulative energy is 1; the one at index r−1 equals EnergyKept.
			var last float64
			for _, r := range rows[1:] {
				if r[0]+"/"+r[1] == key {
					last = parseF(t, r[5])
				}
			}
			if math.Abs(last-1) > 1e-12 {
				t.Errorf("%s: final cumulative energy %v, want 1", key, last)
			}
		}
	}

	// Independent reference for layer 1's K cache: capture X, form K by loops,
	// SVD it directly.
	seqs, err := data.Source{SeqLen: seqLen, Seed: data.SyntheticCalibSeed}.Chunks(m, chunks)
	if err != nil {
		t.Fatal(err)
	}
	const layer = 1
	var direct, wkSV []float64
	err = train.Capture(context.Background(), m, seqs, func(l int, blk *model.Block, x []float32) error {
		if l != layer {
			return nil
		}
		D := mc.Hidden
		k := make([]float64, nTok*kv) // (n, kvDim)
		for i := 0; i < nTok; i++ {
			for j := 0; j < kv; j++ {
				var acc float64
				for c := 0; c < D; c++ {
					acc += float64(x[i*D+c]) * float64(blk.Wk[j*D+c])
				}
				k[i*kv+j] = acc
			}
		}
		var err error
		if _, direct, _, err = linalg.SVD(k, nTok, kv); err != nil {
			return err
		}
		w := make([]float64, len(blk.Wk))
		for i, v := range blk.Wk {
			w[i] = float64(v)
		}
		_, wkSV, _, err = linalg.SVD(w, kv, D)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	gram := sv[fmt.Sprintf("%d/k_cache", layer)]
	for i := range direct {
		if rel := math.Abs(gram[i]-direct[i]) / direct[i]; rel > 1e-6 {
			t.Errorf("layer %d K cache σ_%d: Gram route %.10g, direct SVD %.10g (relative %.2g > 1e-6)", layer, i, gram[i], direct[i], rel)
		}
	}
	for i, want := range wkSV {
		if got := sv[fmt.Sprintf("%d/wk", layer)][i]; math.Abs(got-want) > 1e-9*wkSV[0] {
			t.Errorf("layer %d Wk σ_%d = %v, want %v", layer, i, got, want)
		}
	}
	// The synthetic Wk was built with singular values ∝ 0.8^i: check the shape.
	for i := 1; i < kv; i++ {
		if r := wkSV[i] / wkSV[i-1]; math.Abs(r-0.8) > 1e-4 {
			t.Fatalf("synthetic Wk σ ratio %v at %d, want 0.8", r, i)
		}
	}

	// energy.csv: one row per layer, matrix and density, with the reference rank rule.
	erows := readCSV(t, filepath.Join(dir, "energy.csv"))
	if got := strings.Join(erows[0], ","); got != "layer,matrix,density,rank,energy_kept" {
		t.Fatalf("energy.csv header %q", got)
	}
	if want := 1 + mc.Layers*4*2; len(erows) != want {
		t.Fatalf("energy.csv has %d rows, want %d", len(erows), want)
	}
	for _, r := range erows[1:] {
		dens := parseF(t, r[2])
		wantRank := int(dens*float64(mc.HeadDim)) * mc.KVHeads // 0.5 → 8, 0.25 → 4
		if rank, _ := strconv.Atoi(r[3]); rank != wantRank {
			t.Errorf("energy row %v: rank %d, want %d", r, rank, wantRank)
		}
		vals := sv[r[0]+"/"+r[1]]
		var kept, total float64
		for i, v := range vals {
			total += v * v
			if i < wantRank {
				kept += v * v
			}
		}
		if got := parseF(t, r[4]); math.Abs(got-kept/total) > 1e-12 {
			t.Errorf("energy row %v: %v, want %v", r, got, kept/total)
		}
	}

	// One decodable PNG of the report's size per layer, and no temporary files.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2+mc.Layers {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("output directory holds %v, want 2 CSVs and %d PNGs", names, mc.Layers)
	}
	for l := 0; l < mc.Layers; l++ {
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("layer-%d-spectrum.png", l)))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("layer %d PNG: %v", l, err)
		}
		if b := img.Bounds(); b.Dx() != plot.WidthPx || b.Dy() != plot.HeightPx {
			t.Errorf("layer %d PNG is %v", l, b)
		}
	}
}

func TestAnalyzeBadInput(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{"--seq-len", "8"}, true, "--out"},
		{[]string{"--out", dir, "--densities", "0.5,1.5"}, true, "--densities: 1.5 is outside (0, 1)"},
		{[]string{"--out", dir, "--densities", "0"}, true, "--densities: 0 is outside (0, 1)"},
		{[]string{"--out", dir, "--densities", "half"}, true, `"half" is not a number`},
		{[]string{"--out", dir, "--densities", "0.05"}, true, "--densities: density 0.05"}, // 0.05·8 < 1 channel per head
		{[]string{"--out", dir, "--calib-chunks", "-1"}, true, "--calib-chunks -1"},
		{[]string{"--out", dir, "--seq-len", "1"}, true, "--seq-len 1"},
		{[]string{"--out", dir, "stray"}, true, "unexpected argument"},
		{[]string{"--out", dir, "--data", filepath.Join(dir, "missing.txt")}, false, "missing.txt"},
	}
	for _, tc := range cases {
		err := runAnalyze(context.Background(), newCLI("analyze", ""), append([]string{"--quiet"}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, errUsage) != tc.usage {
			t.Errorf("%v: error %v (usage %v), want one containing %q (usage %v)", tc.args, err, errors.Is(err, errUsage), tc.want, tc.usage)
		}
	}
}
