package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/cskv/cskv/alloc"
	"github.com/cskv/cskv/eval"
	"github.com/cskv/cskv/kv"
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
	Density float64 `json:"density"` // 0 for a plan
	KRank   int     `json:"k_rank"`  // 0 for a plan
	VRank   int     `json:"v_rank"`  // 0 for a plan
	Bits    int     `json:"bits"`
	KRanks  []int   `json:"k_ranks,omitempty"` // a plan's ranks per layer
	VRanks  []int   `json:"v_ranks,omitempty"`
	eval.MemRow
}

func runMemory(ctx context.Context, args []string) error {
	c := newCLI("memory", "[--model M | --shape llama2-7b] [--context 4096] [--densities ...] [--bits ...]")
	modelPath := c.String("model", "", "model whose cache to account for (default: the embedded synthetic model)")
	shape := c.String("shape", "", "account for a known architecture without its file: llama2-7b or llama3-8b")
	context := c.Int("context", 4096, "context length (tokens)")
	densities := c.String("densities", "0.5,0.25,0.2", "densities (K and V alike)")
	bitsFlag := c.String("bits", "16,4,2", "feature bits (16 = fp16 features)")
	cache := train.Cache{Mode: kv.WindowBlock, KQuant: train.KeyPerChannel, QuantZero: train.ZeroFree}
	c.IntVar(&cache.Window, "window", 32, "bi-branch window W (tokens kept original)")
	c.Var(&cache.Mode, "window-mode", "block or sliding")
	c.IntVar(&cache.QuantWindow, "quant-window", 32, "tokens per per-channel key group")
	planPath := c.String("plan", "", "account for a plan's ranks per layer (from cskv allocate) instead of --densities")
	asJSON := c.Bool("json", false, "print JSON")
	if _, err := c.start(args); err != nil {
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
	if *planPath != "" {
		plan, err := alloc.ReadPlan(*planPath)
		if err != nil {
			return err
		}
		if err := plan.Check(mc.Layers, mc.KVDim()); err != nil {
			return fmt.Errorf("--plan %s: %w", *planPath, err)
		}
		k, v := plan.KRanks(), plan.VRanks()
		bits := [][2]int{{plan.KBits, plan.VBits}} // the plan's own bits unless --bits is given
		if err := cache.KQuant.Set(plan.KQuant); err != nil {
			return fmt.Errorf("--plan %s: k_quant %q: %v", *planPath, plan.KQuant, err)
		}
		if flagSet(c.FlagSet, "bits") {
			bits = nil
			for _, bs := range strings.Split(*bitsFlag, ",") {
				b, err := strconv.Atoi(strings.TrimSpace(bs))
				if err != nil {
					return fmt.Errorf("%w: --bits: %q is not an integer", errUsage, bs)
				}
				bits = append(bits, [2]int{b, b})
			}
		}
		for _, kb := range bits {
			b := kb[1]
			cache.KBits, cache.VBits = kb[0], kb[1]
			s, err := cache.Settings(mc, k[0], v[0])
			if err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			mr, err := eval.MemoryTable(mc, k, v, s, *context)
			if err != nil {
				return err
			}
			rows = append(rows, memoryEntry{Bits: b, KRanks: k, VRanks: v, MemRow: mr[0]})
		}
	}
	for _, ds := range strings.Split(*densities, ",") {
		if *planPath != "" {
			break
		}
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
			cache.KBits, cache.VBits = b, b
			s, err := cache.Settings(mc, r, r)
			if err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			mr, err := eval.MemoryTable(mc, eval.Uniform(r, mc.Layers), eval.Uniform(r, mc.Layers), s, *context)
			if err != nil {
				return err
			}
			rows = append(rows, memoryEntry{Density: d, KRank: r, VRank: r, Bits: b, MemRow: mr[0]})
		}
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(rows)
	}
	fmt.Printf("model    %s (kv dim %d = %d kv heads × %d)\n", name, mc.KVDim(), mc.KVHeads, mc.HeadDim)
	fmt.Printf("setting  %d tokens, bi-branch %s W=%d (float32 originals), keys per channel over %d tokens, values per token (one group per head), fp16 scale+zero per group\n\n",
		*context, cache.Mode, cache.Window, cache.QuantWindow)
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(w, "density\trank\tbits\tfp16 B/token/layer\tcache B/token/layer\tratio\tKV memory removed")
	for _, r := range rows {
		if r.KRanks != nil {
			fmt.Fprintf(w, "plan\t%s\t%d\t%.0f\t%.2f\t%.2f×\t%.1f%%\n", rankList(r.KRanks, r.VRanks), r.Bits, r.BaselinePerToken, r.CachePerToken, r.Ratio, 100*r.Removed)
			continue
		}
		fmt.Fprintf(w, "%g\t%d\t%d\t%.0f\t%.2f\t%.2f×\t%.1f%%\n", r.Density, r.KRank, r.Bits, r.BaselinePerToken, r.CachePerToken, r.Ratio, 100*r.Removed)
	}
	return w.Flush()
}
