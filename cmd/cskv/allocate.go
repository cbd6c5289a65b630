package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/cskv/cskv/alloc"
	"github.com/cskv/cskv/internal/plot"
	"github.com/cskv/cskv/train"
)

// runAllocate is `cskv allocate`: measure the rank curves of every layer and
// side, choose the ranks under --budget, write the plan (JSON) and its figure
// (PNG next to it), and print the table.
func runAllocate(ctx context.Context, c *cli, args []string) error {
	cfg := train.Defaults()
	cfg.Budget = 0.25
	registerProblem(c.FlagSet, &cfg)
	out := c.String("out", "plan.json", "the plan file (JSON); the figure goes next to it (.png)")
	registerAllocation(c.FlagSet, &cfg)
	c.IntVar(&cfg.OutWindow, "out-window", cfg.OutWindow, "bi-branch window inside the output term (0 = every token reconstructed)")
	c.configFlag()
	log, err := c.startRun(args, &cfg)
	if err != nil {
		return err
	}
	cfg.Export = *out // Validate wants an output; allocate writes none but the plan
	if err := cfg.ForAllocation().Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if !(cfg.Budget > 0) {
		return fmt.Errorf("%w: --budget %g: must be in (0, 1]", errUsage, cfg.Budget)
	}
	plan, err := train.Allocate(ctx, cfg, train.Env{Log: log})
	if err != nil {
		return err
	}
	if err := plan.Write(*out); err != nil {
		return err
	}
	png := strings.TrimSuffix(*out, ".json") + ".png"
	if err := allocationFigure(plan, png); err != nil {
		return err
	}
	printPlan(plan)
	fmt.Printf("plan         %s\nfigure       %s\n", *out, png)
	return nil
}

// registerAllocation adds the allocation flags shared by allocate and train.
func registerAllocation(fs *flag.FlagSet, c *train.Config) {
	fs.Float64Var(&c.Budget, "budget", c.Budget, "cache bytes per token (all layers, compressed branch, with scales and zeros at the chosen bits) as a fraction of the fp16 cache; ranks per layer and side are allocated")
	fs.Var(&c.Objective, "objective", "what the allocation minimises: out (output term on the held-out chunks), out-mixed (out plus the same at --alloc-window), out-residual, or kv (closed form)")
	fs.IntVar(&c.AllocWindow, "alloc-window", c.AllocWindow, "bi-branch window of the out-mixed objective's second term")
	fs.IntVar(&c.MaxPoints, "max-points", c.MaxPoints, "most candidate ranks per side in the allocation (0 = every rank the groups allow)")
}

// printPlan prints the ranks per layer with their errors and the bytes.
func printPlan(p *alloc.Plan) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "layer\tk rank\tv rank\tk kv_rel\tv kv_rel\tk out_rel\tv out_rel\n")
	at := func(c alloc.Curve, v []float64) string {
		for j, r := range c.Ranks {
			if r == c.Rank && j < len(v) {
				return fmt.Sprintf("%.4f", v[j])
			}
		}
		return "-"
	}
	for _, r := range p.Ranks {
		k, v := p.Curves[2*r.Layer], p.Curves[2*r.Layer+1]
		fmt.Fprintf(w, "%d\t%d\t%d\t%s\t%s\t%s\t%s\n", r.Layer, r.KRank, r.VRank, at(k, k.KV), at(v, v.KV), at(k, k.Out), at(v, v.Out))
	}
	w.Flush()
	fmt.Printf("budget       %g of the fp16 cache (%d bytes per %d tokens); plan %.4f (%d bytes)\n",
		p.Budget, p.BudgetBytes, p.UnitTokens, p.Fraction(), p.PlanBytes)
	fmt.Printf("objective    %s; %.1f s\n", p.Objective, p.Seconds)
}

// allocationFigure draws every curve's minimised error against rank with the
// chosen ranks marked.
func allocationFigure(p *alloc.Plan, path string) error {
	var series []plot.Series
	var chosen []int
	for _, c := range p.Curves {
		x := make([]float64, len(c.Ranks))
		for j, r := range c.Ranks {
			x[j] = float64(r)
		}
		series = append(series, plot.Series{Name: fmt.Sprintf("L%d %s", c.Layer, strings.ToUpper(c.Side.String())), Values: c.Err, X: x})
		chosen = append(chosen, c.Rank)
	}
	title := fmt.Sprintf("%s: rank curves, budget %g (objective %s)", p.Model, p.Budget, p.Objective)
	return plot.AllocationPNG(path, title, "error", series, chosen)
}

// rankList describes per-layer ranks: "k rank 8, v rank 8" when every layer
// has the same, else the lists.
func rankList(k, v []int) string {
	uniform := true
	for i := range k {
		uniform = uniform && k[i] == k[0] && v[i] == v[0]
	}
	if uniform && len(k) > 0 {
		return fmt.Sprintf("k rank %d, v rank %d", k[0], v[0])
	}
	list := func(r []int) string {
		s := make([]string, len(r))
		for i, x := range r {
			s[i] = strconv.Itoa(x)
		}
		return strings.Join(s, ",")
	}
	return fmt.Sprintf("k ranks %s, v ranks %s (per layer)", list(k), list(v))
}
