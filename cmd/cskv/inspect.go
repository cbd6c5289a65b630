package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"text/tabwriter"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/linalg"
)

func runInspect(ctx context.Context, c *cli, args []string) error {
	modelPath := modelFlag(c.FlagSet)
	tensors := c.Bool("tensors", true, "list the tensor table")
	projPath := c.String("projections", "", "inspect a projections file instead: metadata and per-layer shapes")
	if _, err := c.start(args); err != nil {
		return err
	}
	if *projPath != "" {
		return inspectProjections(*projPath)
	}
	m, err := openModel(*modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	mc := m.Config
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "model\t%s\n", describe(m))
	fmt.Fprintf(w, "format\t%s\n", m.Format)
	fmt.Fprintf(w, "digest\t%s\n", m.Digest)
	fmt.Fprintf(w, "architecture\t%s\n", mc.Arch)
	fmt.Fprintf(w, "hidden\t%d\n", mc.Hidden)
	fmt.Fprintf(w, "layers\t%d\n", mc.Layers)
	fmt.Fprintf(w, "heads\t%d (kv heads %d, head dim %d, kv dim %d)\n", mc.Heads, mc.KVHeads, mc.HeadDim, mc.KVDim())
	fmt.Fprintf(w, "ffn\t%d\n", mc.FFN)
	fmt.Fprintf(w, "vocab\t%d\n", mc.Vocab)
	fmt.Fprintf(w, "context length\t%d\n", mc.ContextLength)
	fmt.Fprintf(w, "rope\tbase %g; file layout: %s\n", mc.RopeBase, m.RopeLayoutName())
	fmt.Fprintf(w, "rms eps\t%g\n", mc.RMSEps)
	fmt.Fprintf(w, "tied output\t%v\n", mc.TiedOutput)
	fmt.Fprintf(w, "qkv bias\t%v\n", mc.QKVBias)
	for _, f := range m.Features() {
		fmt.Fprintf(w, "%s\t%s\n", f[0], f[1])
	}
	tok := "none"
	if m.Tokenizer != nil {
		tok = fmt.Sprintf("%T, %d tokens, BOS %d, EOS %d", m.Tokenizer, m.Tokenizer.VocabSize(), m.Tokenizer.BOS(), m.Tokenizer.EOS())
	}
	fmt.Fprintf(w, "tokenizer\t%s\n", tok)
	fmt.Fprintf(w, "BLAS\t%s\n", linalg.Backend())
	fmt.Fprintf(w, "products\t%s\n", linalg.Products())
	if err := w.Flush(); err != nil {
		return err
	}
	if !*tensors {
		return nil
	}
	fmt.Println()
	w = tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(w, "tensor\tshape\ttype")
	for _, t := range m.Tensors() {
		fmt.Fprintf(w, "%s\t%v\t%s\n", t.Name, t.Shape, t.Type)
	}
	return w.Flush()
}

// inspectProjections prints a projections file's metadata and shapes.
func inspectProjections(path string) error {
	p, err := checkpoints.ReadProjections(path)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "projections\t%s\n", path)
	fmt.Fprintf(w, "layers\t%d (hidden %d, kv dim %d)\n", len(p.Layers), p.Hidden, p.KVDim)
	keys := make([]string, 0, len(p.Meta))
	for k := range p.Meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s\t%s\n", k, p.Meta[k])
	}
	fmt.Fprintln(w, "\nlayer\tk_proj_a\tk_proj_b\tv_proj_a\tv_proj_b")
	for i, l := range p.Layers {
		fmt.Fprintf(w, "%d\t[%d %d]\t[%d %d]\t[%d %d]\t[%d %d]\n", i, l.KRank, p.Hidden, p.KVDim, l.KRank, l.VRank, p.Hidden, p.KVDim, l.VRank)
	}
	return w.Flush()
}
