//go:build openblas

// ExpShift of package linalg (exp.go) in C, so that the compiler vectorises
// it: the same operations in the same order, no fused multiply-adds
// (fp-contract=off), hence the same bits as the Go version.

#pragma GCC optimize("fp-contract=off")

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

// exp1 is exp(v) for one shifted value v = x − m.
static inline __attribute__((always_inline)) float exp1(float v) {
	v = v < -87.33654f ? -87.33654f : v;
	v = v > 88.72283f ? 88.72283f : v;
	float t = v * 1.44269504088896341f + 12582912.0f;
	float fk = t - 12582912.0f;
	uint32_t bits;
	memcpy(&bits, &t, sizeof bits);
	uint32_t k = bits - 0x4B400000u;
	float r = v - fk * 0.693359375f - fk * -2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	uint32_t eb = (k + 127u) << 23;
	float two;
	memcpy(&two, &eb, sizeof two);
	return (p * r * r + r + 1) * two;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void exp_shift(float *restrict x, long n, float m) {
	for (long i = 0; i < n; i++) x[i] = exp1(x[i] - m);
}

// exp_shift_lanes is exp_shift returning the sum in 16 interleaved partial
// sums (lane j adds elements j, j+16, …), added in lane order, then the
// tail in order: one vectorised pass (ExpShiftLanes).
__attribute__((target_clones("avx512f", "avx2", "default")))
static float exp_shift_lanes(float *restrict x, long n, float m) {
	float acc[16];
	for (int j = 0; j < 16; j++) acc[j] = 0;
	long i = 0;
	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++) {
			float e = exp1(x[i + j] - m);
			x[i + j] = e;
			acc[j] += e;
		}
	float s = 0;
	for (int j = 0; j < 16; j++) s += acc[j];
	for (; i < n; i++) {
		float e = exp1(x[i] - m);
		x[i] = e;
		s += e;
	}
	return s;
}

float cskv_exp_shift(float *x, long n, float m) {
	exp_shift(x, n, m);
	float s = 0;
	for (long i = 0; i < n; i++) s += x[i];
	return s;
}

// max_of returns the largest of m and x[0..n) (NaNs are skipped, as by
// `if v > m` in Go), with 64 partial maxima so that it vectorises and four
// vectors' comparisons are in flight at once (the largest value does not
// depend on the order in which it is found).
__attribute__((target_clones("avx512f", "avx2", "default")))
static float max_of(const float *x, long n, float m) {
	float acc[64];
	for (int j = 0; j < 16; j++) acc[j] = m;
	long i = 0;
	if (n >= 64) {
		for (int j = 16; j < 64; j++) acc[j] = m;
		for (; i + 64 <= n; i += 64)
			for (int j = 0; j < 64; j++) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
		for (int k = 16; k < 64; k += 16)
			for (int j = 0; j < 16; j++) acc[j] = acc[k + j] > acc[j] ? acc[k + j] : acc[j];
	}
	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
	for (; i < n; i++) m = x[i] > m ? x[i] : m;
	for (int j = 0; j < 16; j++) m = acc[j] > m ? acc[j] : m;
	return m;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void scale(float *restrict x, long n, float s) {
	for (long i = 0; i < n; i++) x[i] *= s;
}

// softmax2 is the softmax of the concatenation of a and b, each part's
// exponentials and sum computed by sum (cskv_exp_shift or exp_shift_lanes);
// it stores the shift and 1/Σ in *mp and *invp.
static void softmax2(float *a, long na, float *b, long nb, float (*sum)(float *, long, float), float *mp, float *invp) {
	float m = max_of(b, nb, max_of(a, na, -__builtin_inff()));
	float sa = 0, sb = 0;
	if (na) sa = sum(a, na, m);
	if (nb) sb = sum(b, nb, m);
	float inv = 1 / (sa + sb);
	scale(a, na, inv);
	scale(b, nb, inv);
	*mp = m;
	*invp = inv;
}

void cskv_softmax2(float *a, long na, float *b, long nb) {
	float m, inv;
	softmax2(a, na, b, nb, cskv_exp_shift, &m, &inv);
}

void cskv_softmax2_lanes(float *a, long na, float *b, long nb, float *m, float *inv) {
	softmax2(a, na, b, nb, exp_shift_lanes, m, inv);
}

// cskv_exp_scale sets x[i] = exp(x[i] − m)·inv: the probabilities of a
// softmax row from its shift and 1/Σ, with the operations of softmax2.
void cskv_exp_scale(float *x, long n, float m, float inv) {
	exp_shift(x, n, m);
	scale(x, n, inv);
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void cskv_scale_diff(float *restrict s, const float *restrict p, long n, float d) {
	for (long i = 0; i < n; i++) s[i] = p[i] * (s[i] - d);
}

// cskv_silu_gate sets g[i] = g[i]/(1 + exp(−g[i]))·u[i] with exp1
// (SiLUGate).
__attribute__((target_clones("avx512f", "avx2", "default")))
void cskv_silu_gate(float *restrict g, const float *restrict u, long n) {
	for (long i = 0; i < n; i++) {
		float x = g[i];
		g[i] = x / (1.0f + exp1(-x)) * u[i];
	}
}

// to_bf16 rounds x to bfloat16, to nearest with ties to even (ToBF16).
static inline __attribute__((always_inline)) uint16_t to_bf16(float x) {
	uint32_t u;
	memcpy(&u, &x, sizeof u);
	if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static inline __attribute__((always_inline)) float from_bf16(uint16_t v) {
	uint32_t u = (uint32_t)v << 16;
	float x;
	memcpy(&x, &u, sizeof x);
	return x;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void scale_bf16_plain(const float *restrict x, uint16_t *restrict r, long n, float s) {
	for (long i = 0; i < n; i++) r[i] = to_bf16(x[i] * s);
}

// The AVX512-BF16 conversion rounds to nearest even and quiets a NaN as
// to_bf16 does, but flushes denormals to zero: the native loops round a
// vector holding a nonzero denormal with to_bf16 instead, so that both give
// the same bits.
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

BF16_TARGET static inline __mmask16 denormals(__m512 v) {
	__m512 a = _mm512_abs_ps(v);
	return _mm512_cmp_ps_mask(a, _mm512_set1_ps(1.17549435e-38f), _CMP_LT_OQ) &
		_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_NEQ_OQ);
}

BF16_TARGET static void scale_bf16_native(const float *restrict x, uint16_t *restrict r, long n, float s) {
	__m512 vs = _mm512_set1_ps(s);
	long i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), vs);
		if (denormals(v)) {
			for (int j = 0; j < 16; j++) r[i + j] = to_bf16(x[i + j] * s);
			continue;
		}
		_mm256_storeu_si256((__m256i *)(r + i), (__m256i)_mm512_cvtneps_pbh(v));
	}
	for (; i < n; i++) r[i] = to_bf16(x[i] * s);
}

// native_bf16 reports whether the CPU has the AVX512-BF16 conversion.
static inline int native_bf16(void) { return __builtin_cpu_supports("avx512bf16"); }

// scale_bf16 sets r[i] = bf16(x[i]·s).
static void scale_bf16(const float *restrict x, uint16_t *restrict r, long n, float s) {
	if (native_bf16()) {
		scale_bf16_native(x, r, n, s);
		return;
	}
	scale_bf16_plain(x, r, n, s);
}

// cskv_softmax2_lanes_bf16 is cskv_softmax2_lanes writing the scaled row
// in bf16 into ra, rb (a and b keep the exponentials): Softmax2LanesBF16.
void cskv_softmax2_lanes_bf16(float *a, long na, float *b, long nb, uint16_t *ra, uint16_t *rb, float *mp, float *invp) {
	float m = max_of(b, nb, max_of(a, na, -__builtin_inff()));
	float sa = 0, sb = 0;
	if (na) sa = exp_shift_lanes(a, na, m);
	if (nb) sb = exp_shift_lanes(b, nb, m);
	float inv = 1 / (sa + sb);
	scale_bf16(a, ra, na, inv);
	scale_bf16(b, rb, nb, inv);
	*mp = m;
	*invp = inv;
}

// cskv_exp_scale_bf16 sets r[i] = bf16(exp(x[i] − m)·inv), leaving the
// exponentials in x (ExpScaleBF16): two loops, each of which vectorises
// (one would not: measured 4× slower than ExpScale).
void cskv_exp_scale_bf16(float *x, uint16_t *r, long n, float m, float inv) {
	exp_shift(x, n, m);
	scale_bf16(x, r, n, inv);
}

// cskv_scale_diff_bf16 sets ds[i] = bf16(p[i]·(s[i] − d)) (ScaleDiffBF16).
__attribute__((target_clones("avx512f", "avx2", "default")))
static void scale_diff_bf16_plain(uint16_t *restrict ds, const float *restrict s, const uint16_t *restrict p, long n, float d) {
	for (long i = 0; i < n; i++) ds[i] = to_bf16(from_bf16(p[i]) * (s[i] - d));
}

BF16_TARGET static void scale_diff_bf16_native(uint16_t *restrict ds, const float *restrict s, const uint16_t *restrict p, long n, float d) {
	__m512 vd = _mm512_set1_ps(d);
	long i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + i))), 16);
		__m512 v = _mm512_mul_ps(_mm512_castsi512_ps(w), _mm512_sub_ps(_mm512_loadu_ps(s + i), vd));
		if (denormals(v)) {
			for (int j = 0; j < 16; j++) ds[i + j] = to_bf16(from_bf16(p[i + j]) * (s[i + j] - d));
			continue;
		}
		_mm256_storeu_si256((__m256i *)(ds + i), (__m256i)_mm512_cvtneps_pbh(v));
	}
	for (; i < n; i++) ds[i] = to_bf16(from_bf16(p[i]) * (s[i] - d));
}

void cskv_scale_diff_bf16(uint16_t *restrict ds, const float *restrict s, const uint16_t *restrict p, long n, float d) {
	if (native_bf16()) {
		scale_diff_bf16_native(ds, s, p, n, d);
		return;
	}
	scale_diff_bf16_plain(ds, s, p, n, d);
}

// cskv_adam is AdamUpdate (adam.go): the same float32 operations in the
// same order (no fused multiply-adds, a correctly rounded square root), so
// the same bits as the Go version. The vector loops are written with
// intrinsics: the compiler does not vectorise sqrtf while it may set errno.
static inline void adam1(float *value, const float *grad, float *m, float *v, long j,
	float b1, float b2, float c1, float c2, float eps, float step, float sq) {
	float g = grad[j];
	float mj = b1 * m[j] + c1 * g;
	float vj = b2 * v[j] + c2 * g * g;
	m[j] = mj;
	v[j] = vj;
	float denom = __builtin_sqrtf(vj) / sq + eps;
	value[j] -= step * mj / denom;
}

#define ADAM_LOOP(W, T, P)                                                                            \
	T vb1 = P##_set1_ps(b1), vb2 = P##_set1_ps(b2), vc1 = P##_set1_ps(c1), vc2 = P##_set1_ps(c2);  \
	T veps = P##_set1_ps(eps), vstep = P##_set1_ps(step), vsq = P##_set1_ps(sq);                    \
	for (; j + W <= n; j += W) {                                                                  \
		T g = P##_loadu_ps(grad + j);                                                             \
		T mj = P##_add_ps(P##_mul_ps(vb1, P##_loadu_ps(m + j)), P##_mul_ps(vc1, g));              \
		T vj = P##_add_ps(P##_mul_ps(vb2, P##_loadu_ps(v + j)), P##_mul_ps(P##_mul_ps(vc2, g), g)); \
		P##_storeu_ps(m + j, mj);                                                                 \
		P##_storeu_ps(v + j, vj);                                                                 \
		T denom = P##_add_ps(P##_div_ps(P##_sqrt_ps(vj), vsq), veps);                             \
		P##_storeu_ps(value + j, P##_sub_ps(P##_loadu_ps(value + j), P##_div_ps(P##_mul_ps(vstep, mj), denom))); \
	}

__attribute__((target("avx512f"))) static long adam_avx512(float *value, const float *grad, float *m, float *v,
	long n, float b1, float b2, float c1, float c2, float eps, float step, float sq) {
	long j = 0;
	ADAM_LOOP(16, __m512, _mm512)
	return j;
}

__attribute__((target("avx"))) static long adam_avx(float *value, const float *grad, float *m, float *v,
	long n, float b1, float b2, float c1, float c2, float eps, float step, float sq) {
	long j = 0;
	ADAM_LOOP(8, __m256, _mm256)
	return j;
}

void cskv_adam(float *value, const float *grad, float *m, float *v, long n,
	float b1, float b2, float eps, float step, float sq) {
	float c1 = 1 - b1, c2 = 1 - b2;
	long j = 0;
	if (__builtin_cpu_supports("avx512f")) {
		j = adam_avx512(value, grad, m, v, n, b1, b2, c1, c2, eps, step, sq);
	} else if (__builtin_cpu_supports("avx")) {
		j = adam_avx(value, grad, m, v, n, b1, b2, c1, c2, eps, step, sq);
	}
	for (; j < n; j++) adam1(value, grad, m, v, j, b1, b2, c1, c2, eps, step, sq);
}
