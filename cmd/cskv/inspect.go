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

func runInspect(ctx context.Context, args []string) error {
	fs := newFlagSet("inspect", "[--model M]")
	var lf logFlags
	lf.register(fs)
	modelPath := modelFlag(fs)
	tensors := fs.Bool("tensors", true, "list the tensor table")
	projPath := fs.String("projections", "", "inspect a projections file instead: metadata and per-layer shapes")
	if err := parse(fs, args); err != nil {
		return err
	}
	if _, err := lf.logger(); err != nil {
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
	c := m.Config
	w := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "model\t%s\n", describe(m))
	fmt.Fprintf(w, "format\t%s\n", m.Format)
	fmt.Fprintf(w, "digest\t%s\n", m.Digest)
	fmt.Fprintf(w, "architecture\t%s\n", c.Arch)
	fmt.Fprintf(w, "hidden\t%d\n", c.Hidden)
	fmt.Fprintf(w, "layers\t%d\n", c.Layers)
	fmt.Fprintf(w, "heads\t%d (kv heads %d, head dim %d, kv dim %d)\n", c.Heads, c.KVHeads, c.HeadDim, c.KVDim())
	fmt.Fprintf(w, "ffn\t%d\n", c.FFN)
	fmt.Fprintf(w, "vocab\t%d\n", c.Vocab)
	fmt.Fprintf(w, "context length\t%d\n", c.ContextLength)
	fmt.Fprintf(w, "rope\tbase %g; file layout: %s\n", c.RopeBase, m.RopeLayoutName())
	fmt.Fprintf(w, "rms eps\t%g\n", c.RMSEps)
	fmt.Fprintf(w, "tied output\t%v\n", c.TiedOutput)
	fmt.Fprintf(w, "qkv bias\t%v\n", c.QKVBias)
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
