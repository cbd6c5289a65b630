package train

import (
	"github.com/cskv/cskv/model"
)

// advanceGroup is how many sequences go through a block at once when the
// hidden states advance (bounds the block's temporary buffers).
const advanceGroup = 8

// stream is the residual stream of a set of sequences as it moves through the
// frozen model, one layer at a time.
type stream struct {
	h    []float32 // (nSeq·T, D)
	nSeq int
	T    int
	rope *model.RopeTable
}

// newStream embeds the sequences (all of the same length).
func newStream(m *model.Model, seqs [][]int) (*stream, error) {
	s := &stream{nSeq: len(seqs)}
	if len(seqs) == 0 {
		return s, nil
	}
	c := m.Config
	s.T = len(seqs[0])
	s.h = make([]float32, len(seqs)*s.T*c.Hidden)
	r, err := c.Rope()
	if err != nil {
		return nil, err
	}
	s.rope = model.NewRopeTable(s.T, r)
	for i, seq := range seqs {
		if err := m.EmbedTokens(s.h[i*s.T*c.Hidden:], seq); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// attnInput returns X = RMSNorm(h) (nSeq·T, D), the input of the layer's
// K/V projections.
func (s *stream) attnInput(c model.Config, blk *model.Block) []float32 {
	x := make([]float32, len(s.h))
	blk.AttnInput(c, x, s.h, s.nSeq*s.T)
	return x
}

// advance runs the original block over the stream in place.
func (s *stream) advance(c model.Config, blk *model.Block) error {
	rows := s.T * c.Hidden
	for i := 0; i < s.nSeq; i += advanceGroup {
		n := min(advanceGroup, s.nSeq-i)
		if err := blk.Forward(c, s.h[i*rows:(i+n)*rows], n, s.T, s.rope, nil); err != nil {
			return err
		}
	}
	return nil
}
