package plot

import (
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s does not decode as PNG: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != WidthPx || b.Dy() != HeightPx {
		t.Fatalf("%s is %d×%d, want %d×%d", path, b.Dx(), b.Dy(), WidthPx, HeightPx)
	}
	return img
}

// colourfulPixels counts pixels that are neither grey nor white: the lines.
func colourfulPixels(img image.Image) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			if c.R != c.G || c.G != c.B {
				n++
			}
		}
	}
	return n
}

func spectrum(n int, decay float64) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = 40 * math.Pow(decay, float64(i))
	}
	return s
}

func exampleSeries() (spec, loss []Series) {
	spec = []Series{
		{Name: "K cache", Values: spectrum(64, 0.85)},
		{Name: "V cache", Values: spectrum(64, 0.93)},
		{Name: "Wk", Values: spectrum(64, 0.97)},
		{Name: "Wv", Values: append(spectrum(63, 0.98), 0)}, // a zero: drawn at the floor
	}
	kv, out := make([]float64, 300), make([]float64, 300)
	for i := range kv {
		x := float64(i)
		kv[i] = 0.02 + 0.5*math.Exp(-x/40)
		out[i] = 0.004 + 0.08*math.Exp(-x/60) + 0.002*math.Sin(x/5)
	}
	steps := make([]float64, 300)
	for i := range steps {
		steps[i] = float64(10 * (i + 1))
	}
	loss = []Series{
		{Name: "KV term", Values: kv, X: steps},
		{Name: "layer-output term", Values: out, X: steps},
	}
	return spec, loss
}

func TestPNGs(t *testing.T) {
	dir := t.TempDir()
	spec, loss := exampleSeries()
	sp := filepath.Join(dir, "spectrum.png")
	if err := SpectrumPNG(sp, "layer 0 singular values", spec); err != nil {
		t.Fatal(err)
	}
	if n := colourfulPixels(decodePNG(t, sp)); n < 500 {
		t.Fatalf("spectrum plot has only %d coloured pixels: lines missing?", n)
	}
	lp := filepath.Join(dir, "loss.png")
	if err := LossPNG(lp, "layer 0 training loss", loss); err != nil {
		t.Fatal(err)
	}
	if n := colourfulPixels(decodePNG(t, lp)); n < 500 {
		t.Fatalf("loss plot has only %d coloured pixels: lines missing?", n)
	}
	// Overwrite in place works and leaves no temporary files behind.
	if err := LossPNG(lp, "again", loss[:1]); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only the two PNGs", names)
	}

	// Examples to look at: CSKV_REPORT_EXAMPLES=/tmp/report_examples go test ./report
	if ex := os.Getenv("CSKV_REPORT_EXAMPLES"); ex != "" {
		if err := os.MkdirAll(ex, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := SpectrumPNG(filepath.Join(ex, "spectrum.png"), "layer 0: singular values (synthetic)", spec); err != nil {
			t.Fatal(err)
		}
		if err := LossPNG(filepath.Join(ex, "loss.png"), "layer 0: training loss (synthetic)", loss); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPNGErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.png")
	for name, err := range map[string]error{
		"no series":     SpectrumPNG(p, "t", nil),
		"all zero":      SpectrumPNG(p, "t", []Series{{Name: "z", Values: []float64{0, 0}}}),
		"negative":      SpectrumPNG(p, "t", []Series{{Name: "n", Values: []float64{1, -1}}}),
		"NaN":           SpectrumPNG(p, "t", []Series{{Name: "n", Values: []float64{math.NaN()}}}),
		"empty series":  SpectrumPNG(p, "t", []Series{{Name: "e"}}),
		"x length":      LossPNG(p, "t", []Series{{Name: "l", Values: []float64{1, 2}, X: []float64{1}}}),
		"no positive":   LossPNG(p, "t", []Series{{Name: "l", Values: []float64{0, -1, math.NaN()}}}),
		"missing dir":   LossPNG(filepath.Join(dir, "nope", "x.png"), "t", []Series{{Name: "l", Values: []float64{1}}}),
		"no loss curve": LossPNG(p, "t", nil),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), "x.png") {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("a failed plot left %s behind (stat err %v)", p, err)
	}
}
