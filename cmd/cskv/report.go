package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/kv"
	"github.com/cskv/cskv/kvcache"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// memRow is the cache memory of one setting at one context length, per layer.
type memRow struct {
	Context          int     `json:"context"`
	BaselinePerToken float64 `json:"baseline_bytes_per_token"` // fp16 K and V
	CachePerToken    float64 `json:"cache_bytes_per_token"`    // compressed branch + window, amortised
	CodesPerToken    float64 `json:"codes_bytes_per_token"`    // packed codes (or fp16 features)
	ScalesPerToken   float64 `json:"scales_zeros_bytes_per_token"`
	WindowBytes      int64   `json:"window_bytes"` // originals + pending features held at this length
	Ratio            float64 `json:"compression_ratio"`
	Removed          float64 `json:"removed_fraction"` // 1 − cache/baseline
}

// cacheConfig builds the real cache's configuration for a setting.
func cacheConfig(mc model.Config, kRank, vRank int, s eval.Settings) kvcache.Config {
	return kvcache.Config{NKVHeads: mc.KVHeads, HeadDim: mc.HeadDim, KRank: kRank, VRank: vRank,
		Window: s.Window, Mode: s.Mode, K: s.K, V: s.V}
}

// checkWindow refuses a window that per-channel (KIVI) key groups do not
// tile: the real cache compresses a key group only when all of it has left
// the window, so the group size must divide W.
func checkWindow(window, kBits int, kQuant string, quantWindow int) error {
	if kBits != 16 && kQuant == "channel" && window > 0 && window%quantWindow != 0 {
		return fmt.Errorf("%w: --window %d is not a multiple of --quant-window %d (per-channel key groups must tile the window)", errUsage, window, quantWindow)
	}
	return nil
}

// memoryTable evaluates the memory formula at the given context lengths. The
// real cache keeps at least one token original, so s.Window = 0 (every token
// compressed, an evaluation setting) has no table: nil.
func memoryTable(mc model.Config, kRank, vRank int, s eval.Settings, contexts ...int) ([]memRow, error) {
	if s.Window == 0 {
		return nil, nil
	}
	cc := cacheConfig(mc, kRank, vRank, s)
	if err := cc.Validate(); err != nil {
		return nil, err
	}
	var rows []memRow
	for _, n := range contexts {
		b := kvcache.Bytes(cc, n)
		base := kvcache.PerTokenBaseline(mc.KVDim())
		fn := float64(n)
		rows = append(rows, memRow{
			Context: n, BaselinePerToken: float64(base), CachePerToken: float64(b.Total) / fn,
			CodesPerToken: float64(b.Codes) / fn, ScalesPerToken: float64(b.ScalesZeros) / fn,
			WindowBytes: b.Originals + b.Pending, Ratio: kvcache.Ratio(cc, n),
			Removed: 1 - float64(b.Total)/(fn*float64(base)),
		})
	}
	return rows, nil
}

func printMemory(rows []memRow) {
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
// report.json).
type trainReport struct {
	Model       string            `json:"model"`
	Synthetic   bool              `json:"synthetic"`
	Projections string            `json:"projections"`
	Seconds     float64           `json:"seconds"`
	PeakRSS     int64             `json:"peak_rss_bytes"`
	Layers      []train.LayerInfo `json:"layers"`
	Eval        []evalRow         `json:"eval,omitempty"`
	Memory      []memRow          `json:"memory"`
	res         *train.Result
}

// evalRow is one perplexity measurement in a report.
type evalRow struct {
	Variant    string            `json:"variant"`
	Window     int               `json:"window"`
	Perplexity float64           `json:"perplexity"`
	KRel       float64           `json:"k_rel_err,omitempty"`
	VRel       float64           `json:"v_rel_err,omitempty"`
	Layers     []eval.LayerError `json:"layers,omitempty"`
}

func buildReport(ctx context.Context, res *train.Result, evalData string, evalChunks, window int, lf *logFlags, log *logrus.Logger) (*trainReport, error) {
	cfg := res.Config
	m := res.Model
	kRank, vRank := res.Layers[0].KRank, res.Layers[0].VRank
	rep := &trainReport{Model: m.Path, Synthetic: isSynthetic(m), Projections: res.Projections, Seconds: res.Seconds,
		PeakRSS: res.PeakRSS, Layers: res.Layers, res: res}
	s, err := settingsFrom(m.Config, kRank, vRank, window, cfg.Window, cfg.KBits, cfg.VBits, cfg.KQuant, cfg.QuantWindow, cfg.QuantZero)
	if err != nil {
		return nil, err
	}
	if rep.Memory, err = memoryTable(m.Config, kRank, vRank, s, 4096, m.Config.ContextLength); err != nil {
		return nil, err
	}
	if evalData == "" && !isSynthetic(m) {
		return rep, nil
	}
	d := dataFlags{path: evalData, format: "auto", seqLen: cfg.SeqLen, chunks: evalChunks}
	chunks, err := loadChunks(m, d, syntheticEvalSeed, syntheticEvalSeqs)
	if err != nil {
		return nil, err
	}
	proj, err := checkpoints.ReadProjections(res.Projections)
	if err != nil {
		return nil, err
	}
	base, err := eval.Perplexity(ctx, m, chunks, nil, 4, nil)
	if err != nil {
		return nil, err
	}
	rep.Eval = append(rep.Eval, evalRow{Variant: "uncompressed", Perplexity: base.Perplexity})
	for _, w := range []int{0, window} {
		sw := s
		sw.Window = w
		r, errs, err := eval.Compressed(ctx, m, chunks, proj, sw, 4, nil)
		if err != nil {
			return nil, err
		}
		k, v := eval.MeanErrors(errs)
		name := "all-compressed"
		if w > 0 {
			name = fmt.Sprintf("bi-branch %s W=%d", cfg.Window, w)
		}
		rep.Eval = append(rep.Eval, evalRow{Variant: name, Window: w, Perplexity: r.Perplexity, KRel: k, VRel: v, Layers: errs})
		log.WithFields(logrus.Fields{"variant": name, "perplexity": fmt.Sprintf("%.4f", r.Perplexity)}).Info("evaluated")
	}
	return rep, nil
}

func printReport(rep *trainReport) {
	fmt.Printf("model        %s\n", describe(rep.res.Model))
	fmt.Printf("projections  %s\n", rep.Projections)
	fmt.Printf("time         %.1f s, peak RSS %.1f MiB\n\n", rep.Seconds, float64(rep.PeakRSS)/(1<<20))
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	printLayers(w, rep.res)
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

// settingsFrom builds evaluation settings from flag values.
func settingsFrom(mc model.Config, kRank, vRank, window int, mode string, kBits, vBits int, kQuant string, quantWindow int, quantZero string) (eval.Settings, error) {
	wm, err := kv.ParseWindowMode(mode)
	if err != nil {
		return eval.Settings{}, fmt.Errorf("%w: --window-mode %q: want block or sliding", errUsage, mode)
	}
	if window < 0 {
		return eval.Settings{}, fmt.Errorf("%w: --window %d: must be ≥ 0", errUsage, window)
	}
	if kQuant != "channel" && kQuant != "token" {
		return eval.Settings{}, fmt.Errorf("%w: --k-quant %q: want channel or token", errUsage, kQuant)
	}
	if quantZero != "free" && quantZero != "clamp" {
		return eval.Settings{}, fmt.Errorf("%w: --quant-zero %q: want free or clamp", errUsage, quantZero)
	}
	if quantWindow < 1 {
		return eval.Settings{}, fmt.Errorf("%w: --quant-window %d: must be a positive integer", errUsage, quantWindow)
	}
	if err := checkWindow(window, kBits, kQuant, quantWindow); err != nil {
		return eval.Settings{}, err
	}
	if kBits == 0 || vBits == 0 { // kv.Quant reads 0 as off; the flags spell off 16
		return eval.Settings{}, fmt.Errorf("%w: --k-bits %d, --v-bits %d: want 2, 3, 4, 8 or 16", errUsage, kBits, vBits)
	}
	q := kv.Quant{KBits: kBits, VBits: vBits, KPerChannel: kQuant == "channel", QuantWindow: quantWindow, ClampZero: quantZero == "clamp"}
	k, v, err := q.Specs(kRank, vRank, mc.KVHeads)
	if err != nil {
		return eval.Settings{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	return eval.Settings{Window: window, Mode: wm, K: k, V: v}, nil
}
