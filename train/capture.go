package train

import (
	"context"
	"fmt"

	"github.com/cskv/cskv/model"
)

// Capture walks the frozen model over seqs layer by layer, as Run does: at
// every layer l it calls each(l, blk, x) with x = RMSNorm(h) (len(seqs)·T,
// hidden), the attention input that the layer's K/V projections read (rows
// are sequence-major: sequence i holds rows i·T … i·T+T−1), then advances
// the residual stream with the original layer. Memory is bounded by the
// stream, one x and one block, whatever the depth of the model.
//
// The sequences must be non-empty and all of the same length T. x is freshly
// allocated for every layer; each may keep it. ctx is checked before every
// layer. An error from each stops the walk and is returned, wrapped with the
// layer.
func Capture(ctx context.Context, m *model.Model, seqs [][]int, each func(l int, blk *model.Block, x []float32) error) error {
	if len(seqs) == 0 {
		return fmt.Errorf("capture: no sequences")
	}
	T := len(seqs[0])
	if T == 0 {
		return fmt.Errorf("capture: sequence 0 is empty")
	}
	for i, s := range seqs {
		if len(s) != T {
			return fmt.Errorf("capture: sequence %d has %d tokens, sequence 0 has %d (all must be equal)", i, len(s), T)
		}
	}
	if each == nil {
		return fmt.Errorf("capture: nil callback")
	}
	h, err := newStream(m, seqs, "") // (N·T, D)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	c := m.Config
	for l := 0; l < c.Layers; l++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("capture: layer %d: %w", l, err)
		}
		blk, err := m.Block(l)
		if err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		x, err := h.attnInput(c, blk) // (N·T, D)
		if err != nil {
			return fmt.Errorf("capture: layer %d: %w", l, err)
		}
		if err := each(l, blk, x); err != nil {
			return fmt.Errorf("capture: layer %d: %w", l, err)
		}
		if l == c.Layers-1 {
			break // nothing reads the stream after the last layer
		}
		if err := h.advance(c, blk); err != nil {
			return fmt.Errorf("capture: layer %d: advance: %w", l, err)
		}
	}
	return nil
}
