package kv

import "fmt"

// Factors are one layer's low-rank key and value projections, row-major in
// PyTorch [out, in] layout: Wk ≈ Bk·Ak and Wv ≈ Bv·Av. Ranks are per layer.
type Factors struct {
	Ak []float32 // [Rk, D]
	Bk []float32 // [KV, Rk]
	Av []float32 // [Rv, D]
	Bv []float32 // [KV, Rv]

	KRank, VRank int // Rk, Rv
}

// The four factor tensors, in the order of Factors' fields and of Tensors.
const (
	Ak = iota
	Bk
	Av
	Bv
)

// Names are the factor tensors' names in the training graph and in
// checkpoints, in Tensors order.
var Names = [4]string{"Ak", "Bk", "Av", "Bv"}

// ExportNames are their names in an exported projections file, in Tensors
// order: layer i's tensor k is "model.layers.{i}.self_attn.{ExportNames[k]}.weight".
var ExportNames = [4]string{"k_proj_a", "k_proj_b", "v_proj_a", "v_proj_b"}

// Tensors returns Ak, Bk, Av, Bv (aliases, not copies).
func (f Factors) Tensors() [4][]float32 { return [4][]float32{f.Ak, f.Bk, f.Av, f.Bv} }

// SetTensors sets Ak, Bk, Av, Bv from t, in Tensors order (aliases, not
// copies); the ranks are left as they are.
func (f *Factors) SetTensors(t [4][]float32) { f.Ak, f.Bk, f.Av, f.Bv = t[0], t[1], t[2], t[3] }

// Shapes returns the [rows, cols] of Ak, Bk, Av, Bv for hidden size D and
// width KV, from the factors' ranks.
func (f Factors) Shapes(hidden, kvDim int) [4][2]int {
	return [4][2]int{{f.KRank, hidden}, {kvDim, f.KRank}, {f.VRank, hidden}, {kvDim, f.VRank}}
}

// Check reports the first factor whose length does not match its shape for
// hidden size D and width KV, or a rank below 1.
func (f Factors) Check(hidden, kvDim int) error {
	if f.KRank < 1 || f.VRank < 1 {
		return fmt.Errorf("ranks k %d, v %d must be positive", f.KRank, f.VRank)
	}
	shapes := f.Shapes(hidden, kvDim)
	for i, t := range f.Tensors() {
		if len(t) != shapes[i][0]*shapes[i][1] {
			return fmt.Errorf("%s has %d values, want shape %v", ExportNames[i], len(t), shapes[i])
		}
	}
	return nil
}
