package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// checkWindow refuses a window that per-channel (KIVI) key groups do not
// tile: the real cache compresses a key group only when all of it has left
// the window, so the group size must divide W.
func checkWindow(window, kBits int, kQuant string, quantWindow int) error {
	if kBits != 16 && kQuant == "channel" && window > 0 && window%quantWindow != 0 {
		return fmt.Errorf("%w: --window %d is not a multiple of --quant-window %d (per-channel key groups must tile the window)", errUsage, window, quantWindow)
	}
	return nil
}

func printMemory(rows []eval.MemRow) {
	if rows == nil {
		fmt.Println("memory: with --window 0 every token is compressed; the real cache keeps W ≥ 1 tokens original (give --window W for its table)")
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(w, "context\tfp16 B/token/layer\tcache B/token/layer\tcodes\tscales+zeros\twindow B (held)\tratio\tremoved")
	for _, r := range rows {
		fmt.Fprintf(w, "%d\t%.0f\t%.2f\t%.2f\t%.2f\t%d\t%.2f×\t%.1f%%\n", r.Context, r.BaselinePerToken, r.CachePerToken,
			r.CodesPerToken, r.ScalesPerToken, r.WindowBytes, r.Ratio, 100*r.Removed)
	}
	w.Flush()
}

// trainReport is what `cskv train` and `cskv init` print (and write as
// report.json): the run, then its evaluation (eval.EvaluateRun).
type trainReport struct {
	Model       string            `json:"model"`
	Synthetic   bool              `json:"synthetic"`
	Projections string            `json:"projections"`
	Seconds     float64           `json:"seconds"`
	PeakRSS     int64             `json:"peak_rss_bytes"`
	Layers      []train.LayerInfo `json:"layers"`
	eval.RunReport
	describe string // the model for the text output
}

func newTrainReport(m *model.Model, res *train.Result, ev *eval.RunReport) *trainReport {
	return &trainReport{Model: m.Path, Synthetic: isSynthetic(m), Projections: res.Projections, Seconds: res.Seconds,
		PeakRSS: res.PeakRSS, Layers: res.Layers, RunReport: *ev, describe: describe(m)}
}

func printReport(rep *trainReport) {
	fmt.Printf("model        %s\n", rep.describe)
	fmt.Printf("projections  %s\n", rep.Projections)
	fmt.Printf("time         %.1f s, peak RSS %.1f MiB\n\n", rep.Seconds, float64(rep.PeakRSS)/(1<<20))
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	printLayers(w, rep.Layers)
	w.Flush()
	if len(rep.Eval) > 0 {
		fmt.Println()
		w = tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(w, "evaluation\tperplexity\tK rel err\tV rel err")
		for _, e := range rep.Eval {
			fmt.Fprintf(w, "%s\t%.4f\t%.4f\t%.4f\n", e.Variant, e.Perplexity, e.KRel, e.VRel)
		}
		w.Flush()
	}
	fmt.Println()
	printMemory(rep.Memory)
}

// printLayers prints the per-layer table of a run.
func printLayers(w *tabwriter.Writer, layers []train.LayerInfo) {
	fmt.Fprintln(w, "layer\tk/v rank\tcalib KV init\tcalib KV final\theld K rel\theld V rel\theld out rel\tseconds")
	for _, l := range layers {
		k, v, o := "-", "-", "-"
		if l.HeldBefore != nil {
			k = fmt.Sprintf("%.4f", l.HeldBefore.KRel)
			v = fmt.Sprintf("%.4f", l.HeldBefore.VRel)
			o = fmt.Sprintf("%.4f", l.HeldBefore.OutRel)
			if l.HeldAfter != nil {
				k += fmt.Sprintf("→%.4f", l.HeldAfter.KRel)
				v += fmt.Sprintf("→%.4f", l.HeldAfter.VRel)
				o += fmt.Sprintf("→%.4f", l.HeldAfter.OutRel)
			}
		}
		final := "-" // no training steps (cskv init)
		if len(l.CurveKV) > 0 {
			final = fmt.Sprintf("%.5g", l.CalibKVFinal)
		}
		fmt.Fprintf(w, "%d\t%d/%d\t%.5g\t%s\t%s\t%s\t%s\t%.1f\n", l.Layer, l.KRank, l.VRank, l.CalibKVInit, final, k, v, o, l.Seconds)
	}
}

// settingsFrom builds evaluation settings from flag values.
func settingsFrom(mc model.Config, kRank, vRank, window int, mode string, kBits, vBits int, kQuant string, quantWindow int, quantZero string) (kvcache.Settings, error) {
	wm, err := kv.ParseWindowMode(mode)
	if err != nil {
		return kvcache.Settings{}, fmt.Errorf("%w: --window-mode %q: want block or sliding", errUsage, mode)
	}
	if window < 0 {
		return kvcache.Settings{}, fmt.Errorf("%w: --window %d: must be ≥ 0", errUsage, window)
	}
	if kQuant != "channel" && kQuant != "token" {
		return kvcache.Settings{}, fmt.Errorf("%w: --k-quant %q: want channel or token", errUsage, kQuant)
	}
	if quantZero != "free" && quantZero != "clamp" {
		return kvcache.Settings{}, fmt.Errorf("%w: --quant-zero %q: want free or clamp", errUsage, quantZero)
	}
	if quantWindow < 1 {
		return kvcache.Settings{}, fmt.Errorf("%w: --quant-window %d: must be a positive integer", errUsage, quantWindow)
	}
	if err := checkWindow(window, kBits, kQuant, quantWindow); err != nil {
		return kvcache.Settings{}, err
	}
	if kBits == 0 || vBits == 0 { // kv.Quant reads 0 as off; the flags spell off 16
		return kvcache.Settings{}, fmt.Errorf("%w: --k-bits %d, --v-bits %d: want 2, 3, 4, 8 or 16", errUsage, kBits, vBits)
	}
	q := kv.Quant{KBits: kBits, VBits: vBits, KPerChannel: kQuant == "channel", QuantWindow: quantWindow, ClampZero: quantZero == "clamp"}
	k, v, err := q.Specs(kRank, vRank, mc.KVHeads)
	if err != nil {
		return kvcache.Settings{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	return kvcache.Settings{Window: window, Mode: wm, K: k, V: v}, nil
}
