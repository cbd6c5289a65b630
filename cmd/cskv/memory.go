package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// memoryShapes are architectures to account for without a model file.
var memoryShapes = map[string]model.Config{
	"llama2-7b": {Arch: "llama", Hidden: 4096, Layers: 32, Heads: 32, KVHeads: 32, HeadDim: 128, ContextLength: 4096},
	"llama3-8b": {Arch: "llama", Hidden: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, ContextLength: 8192},
}

// memoryEntry is one setting of the memory table.
type memoryEntry struct {
	Density float64 `json:"density"`
	KRank   int     `json:"k_rank"`
	VRank   int     `json:"v_rank"`
	Bits    int     `json:"bits"`
	eval.MemRow
}

func runMemory(ctx context.Context, args []string) error {
	fs := newFlagSet("memory", "[--model M | --shape llama2-7b] [--context 4096] [--densities ...] [--bits ...]")
	var lf logFlags
	lf.register(fs)
	modelPath := fs.String("model", "", "model whose cache to account for (default: the embedded synthetic model)")
	shape := fs.String("shape", "", "account for a known architecture without its file: llama2-7b or llama3-8b")
	context := fs.Int("context", 4096, "context length (tokens)")
	densities := fs.String("densities", "0.5,0.25,0.2", "densities (K and V alike)")
	bitsFlag := fs.String("bits", "16,4,2", "feature bits (16 = fp16 features)")
	window := fs.Int("window", 32, "bi-branch window W (tokens kept original)")
	windowMode := fs.String("window-mode", "block", "block or sliding")
	quantWindow := fs.Int("quant-window", 32, "tokens per per-channel key group")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if _, err := lf.logger(); err != nil {
		return err
	}
	if *context < 1 {
		return fmt.Errorf("%w: --context %d: must be ≥ 1", errUsage, *context)
	}
	var mc model.Config
	name := *shape
	if *shape != "" {
		c, ok := memoryShapes[*shape]
		if !ok {
			return fmt.Errorf("%w: --shape %q: want llama2-7b or llama3-8b", errUsage, *shape)
		}
		mc = c
	} else {
		m, err := openModel(*modelPath)
		if err != nil {
			return err
		}
		mc, name = m.Config, describe(m)
		m.Close()
	}
	var rows []memoryEntry
	for _, ds := range strings.Split(*densities, ",") {
		d, err := strconv.ParseFloat(strings.TrimSpace(ds), 64)
		if err != nil {
			return fmt.Errorf("%w: --densities: %q is not a number", errUsage, ds)
		}
		r, err := train.RankFromDensity(d, mc.HeadDim, mc.KVHeads)
		if err != nil {
			return fmt.Errorf("%w: --densities: %v", errUsage, err)
		}
		for _, bs := range strings.Split(*bitsFlag, ",") {
			b, err := strconv.Atoi(strings.TrimSpace(bs))
			if err != nil {
				return fmt.Errorf("%w: --bits: %q is not an integer", errUsage, bs)
			}
			s, err := settingsFrom(mc, r, r, *window, *windowMode, b, b, "channel", *quantWindow, "free")
			if err != nil {
				return err
			}
			mr, err := eval.MemoryTable(mc, r, r, s, *context)
			if err != nil {
				return err
			}
			rows = append(rows, memoryEntry{d, r, r, b, mr[0]})
		}
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(rows)
	}
	fmt.Printf("model    %s (kv dim %d = %d kv heads × %d)\n", name, mc.KVDim(), mc.KVHeads, mc.HeadDim)
	fmt.Printf("setting  %d tokens, bi-branch %s W=%d (float32 originals), keys per channel over %d tokens, values per token (one group per head), fp16 scale+zero per group\n\n",
		*context, *windowMode, *window, *quantWindow)
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(w, "density\trank\tbits\tfp16 B/token/layer\tcache B/token/layer\tratio\tKV memory removed")
	for _, r := range rows {
		fmt.Fprintf(w, "%g\t%d\t%d\t%.0f\t%.2f\t%.2f×\t%.1f%%\n", r.Density, r.KRank, r.Bits, r.BaselinePerToken, r.CachePerToken, r.Ratio, 100*r.Removed)
	}
	return w.Flush()
}
