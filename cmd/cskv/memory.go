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

func runMemory(ctx context.Context, c *cli, args []string) error {
	modelPath := c.String("model", "", "model whose cache to account for (default: the embedded synthetic model)")
	shape := c.String("shape", "", "account for a known architecture without its file: "+model.ShapeNames())
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
	bits, err := parseInts("bits", *bitsFlag)
	if err != nil {
		return err
	}
	var mc model.Config
	name := *shape
	if *shape != "" {
		s, ok := model.Shapes[*shape]
		if !ok {
			return fmt.Errorf("%w: --shape %q: want one of %s", errUsage, *shape, model.ShapeNames())
		}
		mc = s
	} else {
		m, err := openModel(*modelPath)
		if err != nil {
			return err
		}
		mc, name = m.Config, describe(m)
		m.Close()
	}
	var rows []eval.MemoryEntry
	if *planPath != "" {
		plan, err := alloc.ReadPlan(*planPath)
		if err != nil {
			return err
		}
		if err := plan.Check(mc.Layers, mc.KVDim()); err != nil {
			return fmt.Errorf("--plan %s: %w", *planPath, err)
		}
		if err := cache.KQuant.Set(plan.KQuant); err != nil {
			return fmt.Errorf("--plan %s: k_quant %q: %v", *planPath, plan.KQuant, err)
		}
		kb := [][2]int{{plan.KBits, plan.VBits}} // the plan's own bits unless --bits is given
		if flagSet(c.FlagSet, "bits") {
			kb = nil
			for _, b := range bits {
				kb = append(kb, [2]int{b, b})
			}
		}
		if rows, err = eval.PlanMemory(mc, plan.KRanks(), plan.VRanks(), cache, kb, *context); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	} else {
		var dens []float64
		for _, ds := range strings.Split(*densities, ",") {
			d, err := strconv.ParseFloat(strings.TrimSpace(ds), 64)
			if err != nil {
				return fmt.Errorf("%w: --densities: %q is not a number", errUsage, ds)
			}
			dens = append(dens, d)
		}
		if rows, err = eval.MemorySweep(mc, cache, dens, bits, *context); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
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

// parseInts parses the comma-separated integers of --name.
func parseInts(name, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%w: --%s: %q is not an integer", errUsage, name, f)
		}
		out = append(out, v)
	}
	return out, nil
}
