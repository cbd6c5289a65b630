//go:build !openblas

package linalg

const hasDNNL = false

// dnnlGemm is the oneDNN product; this build has none.
func dnnlGemm(bool, bool, bool, bool, int, int, int, float32, []float32, int, []float32, int, float32, []float32, int) bool {
	return false
}

// dnnlProduct is the oneDNN product with bf16 operands; this build has none.
func dnnlProduct(bool, bool, int, int, int, float32, Operand, Operand, float32, []float32, int) bool {
	return false
}

// dnnlPeakProduct is oneDNN's product for Peak; this build has none.
func dnnlPeakProduct(bool, int, int, int) (peakProduct, error) {
	return peakProduct{}, errNoDNNL
}

func freeze([]float32) {}
func thaw([]float32)   {}
func frozenCount() int { return 0 }
