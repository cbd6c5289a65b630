package plot

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Floor of the allocation figure's log axis: errors of 0 (full rank) and
// below are drawn at it.
const allocFloor = 1e-6

// AllocationPNG writes the allocation figure to path: one line per curve
// (x = rank, y = error on a log axis) and a filled circle on each curve at
// its chosen rank chosen[i] (0 = none).
func AllocationPNG(path, title, ylabel string, curves []Series, chosen []int) error {
	if len(curves) == 0 {
		return fmt.Errorf("allocation plot %s: no curves", path)
	}
	if len(chosen) != len(curves) {
		return fmt.Errorf("allocation plot %s: %d chosen ranks for %d curves", path, len(chosen), len(curves))
	}
	p := newPlot(title, "rank", ylabel+" (log scale)")
	p.Legend.Top = true
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, s := range curves {
		pts, err := points(s)
		if err != nil {
			return fmt.Errorf("allocation plot %s: %w", path, err)
		}
		var mark plotter.XYs
		for j := range pts {
			if math.IsNaN(pts[j].Y) || math.IsInf(pts[j].Y, 0) {
				return fmt.Errorf("allocation plot %s: series %q has invalid value %v", path, s.Name, pts[j].Y)
			}
			pts[j].Y = max(pts[j].Y, allocFloor)
			lo, hi = min(lo, pts[j].Y), max(hi, pts[j].Y)
			if int(pts[j].X) == chosen[i] && chosen[i] > 0 {
				mark = append(mark, pts[j])
			}
		}
		log10Points(pts)
		if err := addLine(p, i, s.Name, pts); err != nil {
			return fmt.Errorf("allocation plot %s: %w", path, err)
		}
		if len(mark) > 0 {
			log10Points(mark)
			sc, err := plotter.NewScatter(mark)
			if err != nil {
				return fmt.Errorf("allocation plot %s: %w", path, err)
			}
			sc.GlyphStyle.Shape = draw.CircleGlyph{}
			sc.GlyphStyle.Radius = vg.Points(4)
			sc.GlyphStyle.Color = plotutil.Color(i)
			p.Add(sc)
		}
	}
	p.Legend.Add("● chosen rank", &plotter.Line{LineStyle: draw.LineStyle{Color: color.Transparent}})
	setLogY(p, lo, hi)
	return savePNG(p, path)
}
