//go:build !openblas

package linalg

// minVecExp is the shortest slice ExpShift hands to expShiftVec; this build
// has no vector version.
const minVecExp = 1 << 62

func expShiftVec(x []float32, m float32) float32 { return expShiftGo(x, m) }

func softmax2Vec(a, b []float32)                       { softmax2Go(a, b) }
func softmax2LanesVec(a, b []float32) (m, inv float32) { return softmax2LanesGo(a, b) }
func expScaleVec(x []float32, m, inv float32)          { expScaleGo(x, m, inv) }
func scaleDiffVec(s, p []float32, d float32)           { scaleDiffGo(s, p, d) }
func siluGateVec(g, u []float32)                       { siluGateGo(g, u) }

func softmaxExpBF16Vec(a, b []float32, ra, rb []uint16) (m, inv float32) {
	return softmaxExpBF16Go(a, b, ra, rb)
}
func expBF16Vec(x []float32, r []uint16, m float32) { expBF16Go(x, r, m) }
func softmaxExpBF16RowsVec(p []float32, ldp int, po []float32, ldo int, p16, po16 []uint16, span []int32, st []float32) {
	softmaxExpBF16RowsGo(p, ldp, po, ldo, p16, po16, span, st)
}
func scaleDiffBF16Vec(ds []uint16, s []float32, p []uint16, d, f float32) {
	scaleDiffBF16Go(ds, s, p, d, f)
}

// vecBF16: this build has no vector version.
const vecBF16 = 1 << 62

func adamVec(value, grad, m, v []float32, p AdamParams) { adamGo(value, grad, m, v, p) }
