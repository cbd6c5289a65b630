package eval

import (
	"context"
	"testing"

	"github.com/cskv/cskv/model"
	"github.com/cskv/cskv/train"
)

// Greedy decoding step by step agrees with the parallel forward over the
// same tokens: ParallelDiff is small, and every generated token is the
// argmax of the parallel logits at the position before it.
func TestGreedyMatchesParallel(t *testing.T) {
	m, err := model.Synthetic(train.SyntheticSeed)
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int{3, 1, 4, 1, 5}
	const n = 12
	out, logits, err := Greedy(context.Background(), m, prompt, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != n || len(logits) != len(prompt)+n-1 {
		t.Fatalf("%d tokens, %d logit rows; want %d, %d", len(out), len(logits), n, len(prompt)+n-1)
	}
	tokens := append(append([]int{}, prompt...), out...)[:len(logits)]
	diff, err := ParallelDiff(m, tokens, logits, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff > 1e-4 {
		t.Errorf("step-by-step vs parallel logits differ by %g > 1e-4", diff)
	}
	full, err := m.Forward([][]int{tokens}, nil)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	for i, tok := range out {
		p := len(prompt) - 1 + i
		if want := model.Argmax(full[p*V : (p+1)*V]); tok != want {
			t.Errorf("token %d: %d, parallel argmax %d", i, tok, want)
		}
	}
	if _, _, err := Greedy(context.Background(), m, nil, 3, nil); err == nil {
		t.Error("empty prompt: no error")
	}
}
