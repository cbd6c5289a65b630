//go:build openblas

package linalg

// #cgo CFLAGS: -O3
// float cskv_exp_shift(float *x, long n, float m);
// void cskv_softmax2(float *a, long na, float *b, long nb);
// void cskv_softmax2_lanes(float *a, long na, float *b, long nb, float *m, float *inv);
// void cskv_exp_scale(float *x, long n, float m, float inv);
// void cskv_scale_diff(float *s, const float *p, long n, float d);
// void cskv_silu_gate(float *g, const float *u, long n);
import "C"

// minVecExp is the shortest slice ExpShift hands to C: below it the cgo
// call costs more than the vector instructions save.
const minVecExp = 64

func expShiftVec(x []float32, m float32) float32 {
	return float32(C.cskv_exp_shift((*C.float)(&x[0]), C.long(len(x)), C.float(m)))
}

func softmax2Vec(a, b []float32) {
	pa, pb := cfloats(a), cfloats(b)
	C.cskv_softmax2(pa, C.long(len(a)), pb, C.long(len(b)))
}

func softmax2LanesVec(a, b []float32) (m, inv float32) {
	pa, pb := cfloats(a), cfloats(b)
	var cm, ci C.float
	C.cskv_softmax2_lanes(pa, C.long(len(a)), pb, C.long(len(b)), &cm, &ci)
	return float32(cm), float32(ci)
}

func expScaleVec(x []float32, m, inv float32) {
	C.cskv_exp_scale(cfloats(x), C.long(len(x)), C.float(m), C.float(inv))
}

// cfloats is x's first element for C (nil when x is empty).
func cfloats(x []float32) *C.float {
	if len(x) == 0 {
		return nil
	}
	return (*C.float)(&x[0])
}

func scaleDiffVec(s, p []float32, d float32) {
	p = p[:len(s)]
	C.cskv_scale_diff((*C.float)(&s[0]), (*C.float)(&p[0]), C.long(len(s)), C.float(d))
}

func siluGateVec(g, u []float32) {
	u = u[:len(g)]
	C.cskv_silu_gate((*C.float)(&g[0]), (*C.float)(&u[0]), C.long(len(g)))
}
