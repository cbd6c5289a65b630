package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/train"
)

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

// printReport prints the report of a finished run (cskv train, init and
// merge).
func printReport(rep *eval.Report) {
	fmt.Printf("model        %s\n", describeModel(rep.Model, rep.Synthetic))
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
