// Package plot draws the PNG figures of a CSKV run with gonum.org/v1/plot:
// singular value spectra of the K/V caches and weights (the CSKV paper's
// motivation figure) and training loss curves.
package plot

import (
	"github.com/cskv/cskv/atomicfile"

	"bytes"
	"fmt"
	"image/color"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Figure size: 8 × 5 inches at 96 dpi.
const (
	WidthPx  = 768
	HeightPx = 480
	dpi      = 96
)

// SpectrumFloor is the smallest normalised singular value drawn: smaller
// ones (including zeros) are drawn at this value, since a log axis cannot
// show them.
const SpectrumFloor = 1e-8

// Series is one named line. X is optional: nil means 1, 2, …, len(Values).
type Series struct {
	Name   string
	Values []float64
	X      []float64
}

// SpectrumPNG writes a figure of singular value spectra to path: one line per
// series (e.g. K cache, V cache, Wk, Wv), x = index (1-based), y = singular
// value divided by the series' largest, on a log axis. Values are expected in
// descending order but are plotted as given.
func SpectrumPNG(path, title string, series []Series) error {
	if len(series) == 0 {
		return fmt.Errorf("spectrum plot %s: no series", path)
	}
	p := newPlot(title, "singular value index", "singular value / largest (log scale)")
	// Spectra fall from the top-left corner: the bottom-left one is free.
	p.Legend.Top, p.Legend.Left = false, true
	p.Legend.XOffs, p.Legend.YOffs = 10, 10
	ymin := 1.0
	for i, s := range series {
		var top float64
		for _, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return fmt.Errorf("spectrum plot %s: series %q has invalid singular value %v", path, s.Name, v)
			}
			top = max(top, v)
		}
		if top == 0 {
			return fmt.Errorf("spectrum plot %s: series %q has no positive singular value", path, s.Name)
		}
		pts, err := points(s)
		if err != nil {
			return fmt.Errorf("spectrum plot %s: %w", path, err)
		}
		for j := range pts {
			pts[j].Y = max(pts[j].Y/top, SpectrumFloor)
			ymin = min(ymin, pts[j].Y)
		}
		log10Points(pts)
		if err := addLine(p, i, s.Name, pts); err != nil {
			return fmt.Errorf("spectrum plot %s: %w", path, err)
		}
	}
	setLogY(p, ymin, 1)
	return savePNG(p, path)
}

// LossPNG writes loss curves to path: one line per term, x = step (the
// series' X, or 1, 2, …), y on a log axis. Points that are not positive and
// finite cannot be shown on a log axis and are left out; it is an error if no
// series has any point left.
func LossPNG(path, title string, curves []Series) error {
	if len(curves) == 0 {
		return fmt.Errorf("loss plot %s: no curves", path)
	}
	p := newPlot(title, "step", "loss (log scale)")
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for i, s := range curves {
		all, err := points(s)
		if err != nil {
			return fmt.Errorf("loss plot %s: %w", path, err)
		}
		pts := all[:0]
		for _, pt := range all {
			if pt.Y > 0 && !math.IsInf(pt.Y, 0) && !math.IsNaN(pt.X) && !math.IsInf(pt.X, 0) {
				pts = append(pts, pt)
				ymin, ymax = min(ymin, pt.Y), max(ymax, pt.Y)
			}
		}
		if len(pts) == 0 {
			continue
		}
		log10Points(pts)
		if err := addLine(p, i, s.Name, pts); err != nil {
			return fmt.Errorf("loss plot %s: %w", path, err)
		}
	}
	if math.IsInf(ymin, 1) {
		return fmt.Errorf("loss plot %s: no positive finite loss value to draw", path)
	}
	setLogY(p, ymin, ymax)
	return savePNG(p, path)
}

func newPlot(title, xlabel, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.Legend.Top = true
	p.Legend.ThumbnailWidth = 0.4 * vg.Inch
	grid := plotter.NewGrid()
	grid.Vertical.Color = color.Gray{Y: 220}
	grid.Horizontal.Color = color.Gray{Y: 220}
	p.Add(grid)
	return p
}

// points pairs a series' values with its x positions.
func points(s Series) (plotter.XYs, error) {
	if len(s.Values) == 0 {
		return nil, fmt.Errorf("series %q is empty", s.Name)
	}
	if s.X != nil && len(s.X) != len(s.Values) {
		return nil, fmt.Errorf("series %q has %d x positions for %d values", s.Name, len(s.X), len(s.Values))
	}
	pts := make(plotter.XYs, len(s.Values))
	for i, v := range s.Values {
		pts[i].X = float64(i + 1)
		if s.X != nil {
			pts[i].X = s.X[i]
		}
		pts[i].Y = v
	}
	return pts, nil
}

func addLine(p *plot.Plot, i int, name string, pts plotter.XYs) error {
	l, err := plotter.NewLine(pts)
	if err != nil {
		return fmt.Errorf("series %q: %w", name, err)
	}
	l.Color = plotutil.Color(i)
	l.Dashes = plotutil.Dashes(i)
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// Log axes: gonum's plot.LogScale mis-places the y label's glyph box (it
// takes the arithmetic mid-range), which pushes the data area down by half
// the label's length. So the y axis is linear in log10(value) instead, with
// ticks labelled by the value: same picture, no padding artefact.

// log10Points replaces each Y by log10(Y); Y must be positive.
func log10Points(pts plotter.XYs) {
	for i := range pts {
		pts[i].Y = math.Log10(pts[i].Y)
	}
}

// setLogY sets the y axis (holding log10 of the values) to whole decades
// covering [lo, hi], so at least two labelled ticks are always visible.
func setLogY(p *plot.Plot, lo, hi float64) {
	p.Y.Tick.Marker = decadeTicks{}
	p.Y.Min = math.Floor(math.Log10(lo) + 1e-9)
	p.Y.Max = math.Ceil(math.Log10(hi) - 1e-9)
	if p.Y.Max <= p.Y.Min {
		p.Y.Max = p.Y.Min + 1
	}
}

// decadeTicks marks an axis holding log10(value): the powers of ten are
// labelled with their value, and 2…9 times them are marked between.
type decadeTicks struct{}

func (decadeTicks) Ticks(lo, hi float64) []plot.Tick {
	if !(hi > lo) || math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		return nil
	}
	var ticks []plot.Tick
	for e := math.Floor(lo); e <= math.Ceil(hi); e++ {
		for m := 1; m < 10; m++ {
			v := e + math.Log10(float64(m))
			if v < lo-1e-9 || v > hi+1e-9 {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 {
				t.Label = strconv.FormatFloat(math.Pow(10, e), 'g', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// savePNG renders p and writes it to path atomically.
func savePNG(p *plot.Plot, path string) error {
	wt, err := p.WriterTo(WidthPx*vg.Inch/dpi, HeightPx*vg.Inch/dpi, "png")
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return fmt.Errorf("plot %s: render: %w", path, err)
	}
	return atomicfile.Write(path, buf.Bytes())
}
