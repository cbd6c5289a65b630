package linalg

import "math"

// AdamParams are the scalars of one Adam update (PyTorch's formulation):
// the moments' decay rates, ε, the step size lr / (1 − β₁ᵗ) and
// √(1 − β₂ᵗ).
type AdamParams struct {
	Beta1, Beta2, Eps, StepSize, SqrtBC2 float32
}

// minVecAdam is the shortest slice AdamUpdate hands to C.
const minVecAdam = 256

// AdamUpdate applies one Adam update to value from grad, updating the
// moments m and v in place (all of one length):
//
//	m = β₁·m + (1 − β₁)·g
//	v = β₂·v + (1 − β₂)·g·g
//	value −= StepSize·m / (√v / SqrtBC2 + ε)
//
// in float32, each operation rounded. The vectorised version (the openblas
// build) computes the same operations in the same order, so both give the
// same bits.
func AdamUpdate(value, grad, m, v []float32, p AdamParams) {
	n := len(grad)
	value, m, v = value[:n], m[:n], v[:n]
	if n >= minVecAdam {
		adamVec(value, grad, m, v, p)
		return
	}
	adamGo(value, grad, m, v, p)
}

func adamGo(value, grad, m, v []float32, p AdamParams) {
	b1, b2, eps, step, sq := p.Beta1, p.Beta2, p.Eps, p.StepSize, p.SqrtBC2
	for j, g := range grad {
		m[j] = b1*m[j] + (1-b1)*g
		v[j] = b2*v[j] + (1-b2)*g*g
		denom := float32(math.Sqrt(float64(v[j])))/sq + eps
		value[j] -= step * m[j] / denom
	}
}
