//go:build openblas

package linalg

// #cgo CFLAGS: -O3
// #cgo LDFLAGS: -lm
// float cskv_exp_shift(float *x, long n, float m);
// void cskv_softmax2(float *a, long na, float *b, long nb);
// typedef struct { float m, inv; } cskv_shift;
// cskv_shift cskv_softmax2_lanes(float *a, long na, float *b, long nb);
// void cskv_exp_scale(float *x, long n, float m, float inv);
// void cskv_scale_diff(float *s, const float *p, long n, float d);
// void cskv_silu_gate(float *g, const float *u, long n);
// #include <stdint.h>
// cskv_shift cskv_softmax_exp_bf16(const float *a, long na, const float *b, long nb, uint16_t *ra, uint16_t *rb);
// void cskv_softmax_exp_bf16_rows(const float *p, long ldp, const float *po, long ldo, uint16_t *p16, uint16_t *po16, long rows, const int32_t *span, float *st);
// void cskv_exp_bf16(const float *x, uint16_t *r, long n, float m);
// void cskv_scale_diff_bf16(uint16_t *ds, const float *s, const uint16_t *p, long n, float d, float f);
// void cskv_adam(float *value, const float *grad, float *m, float *v, long n, float b1, float b2, float eps, float step, float sq);
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
	r := C.cskv_softmax2_lanes(pa, C.long(len(a)), pb, C.long(len(b)))
	return float32(r.m), float32(r.inv)
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

// cbf16 is x's first element for C (nil when x is empty).
func cbf16(x []uint16) *C.uint16_t {
	if len(x) == 0 {
		return nil
	}
	return (*C.uint16_t)(&x[0])
}

// The bf16 probability writers always run in C in this build, whatever the
// length, so that a row and any part of it get the same exponentials.

func softmaxExpBF16Vec(a, b []float32, ra, rb []uint16) (m, inv float32) {
	checkBF16("SoftmaxExpBF16", len(a), len(ra))
	checkBF16("SoftmaxExpBF16", len(b), len(rb))
	r := C.cskv_softmax_exp_bf16(cfloats(a), C.long(len(a)), cfloats(b), C.long(len(b)), cbf16(ra), cbf16(rb))
	return float32(r.m), float32(r.inv)
}

func softmaxExpBF16RowsVec(p []float32, ldp int, po []float32, ldo int, p16, po16 []uint16, span []int32, st []float32) {
	rows := len(span) / 4
	C.cskv_softmax_exp_bf16_rows(cfloats(p), C.long(ldp), cfloats(po), C.long(ldo), cbf16(p16), cbf16(po16),
		C.long(rows), (*C.int32_t)(&span[0]), cfloats(st))
}

func expBF16Vec(x []float32, r []uint16, m float32) {
	checkBF16("ExpBF16", len(x), len(r))
	C.cskv_exp_bf16(cfloats(x), cbf16(r), C.long(len(x)), C.float(m))
}

func scaleDiffBF16Vec(ds []uint16, s []float32, p []uint16, d, f float32) {
	checkBF16("ScaleDiffBF16", len(ds), len(s))
	checkBF16("ScaleDiffBF16", len(ds), len(p))
	C.cskv_scale_diff_bf16(cbf16(ds), cfloats(s), cbf16(p), C.long(len(ds)), C.float(d), C.float(f))
}

// vecBF16 is the shortest row the bf16 probability writers hand to C: all
// of them (see above).
const vecBF16 = 0

func adamVec(value, grad, m, v []float32, p AdamParams) {
	C.cskv_adam(cfloats(value), cfloats(grad), cfloats(m), cfloats(v), C.long(len(grad)),
		C.float(p.Beta1), C.float(p.Beta2), C.float(p.Eps), C.float(p.StepSize), C.float(p.SqrtBC2))
}
