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

// cskv_shift is a softmax row's shift and 1/Σ, returned by value: a Go
// caller passing pointers to its locals would allocate them on every row.
typedef struct {
	float m, inv;
} cskv_shift;

cskv_shift cskv_softmax2_lanes(float *a, long na, float *b, long nb) {
	cskv_shift r;
	softmax2(a, na, b, nb, exp_shift_lanes, &r.m, &r.inv);
	return r;
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

// native_bf16 reports whether the CPU has the AVX512-BF16 conversion.
static inline int native_bf16(void) { return __builtin_cpu_supports("avx512bf16"); }

// Attention's bf16 probabilities (SoftmaxExpBF16, ExpBF16): exponentials
// computed with fused multiply-adds (the pragma above leaves explicit ones
// alone), rounded to bf16 in the same pass. exp_fma is exp(v) for v ≤ 88.7
// (a NaN stays one): n = round(v·log₂e), r = v − n·ln 2 in two parts,
// Cephes' polynomial for e^r in Horner form, times 2ⁿ; below −104 the
// result is 0 (no float32 is nearer).
#define EXP_LO -104.0f
#define EXP_HI 88.72283f
#define EXP_POLY(FMA, p, r)                                                 \
	p = FMA(p, r, 1.3981999507e-3f); p = FMA(p, r, 8.3334519073e-3f);    \
	p = FMA(p, r, 4.1665795894e-2f); p = FMA(p, r, 1.6666665459e-1f);    \
	p = FMA(p, r, 5.0000001201e-1f); p = FMA(p, r, 1.0f); p = FMA(p, r, 1.0f);

static inline float exp_fma(float v) {
	if (!(v == v)) return v;
	v = v < EXP_LO ? EXP_LO : v;
	v = v > EXP_HI ? EXP_HI : v;
	float n = __builtin_nearbyintf(v * 1.44269504088896341f);
	float r = __builtin_fmaf(n, -0.693359375f, v);
	r = __builtin_fmaf(n, 2.12194440e-4f, r);
	float p = 1.9875691500e-4f;
#define F1(a, b, c) __builtin_fmaf(a, b, c)
	EXP_POLY(F1, p, r)
#undef F1
	return __builtin_ldexpf(p, (int)n);
}

#define FMA16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

// exp_fma16 is exp_fma on 16 lanes, bit for bit.
FMA16_TARGET static inline __m512 exp_fma16(__m512 v) {
	v = _mm512_max_ps(_mm512_set1_ps(EXP_LO), v); // v < lo ? lo : v, a NaN kept
	v = _mm512_min_ps(_mm512_set1_ps(EXP_HI), v);
	// n = round(v·log₂e) to nearest even, as by the round instruction: |v·log₂e| < 2²²,
	// so adding and subtracting 1.5·2²³ rounds it (two cheap additions for
	// the instruction's two micro-operations on one port)
	const __m512 magic = _mm512_set1_ps(12582912.0f);
	__m512 n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)), magic), magic);
	__m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), v);
	r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
	__m512 p = _mm512_set1_ps(1.9875691500e-4f);
#define F16(a, b, c) _mm512_fmadd_ps(a, b, _mm512_set1_ps(c))
	EXP_POLY(F16, p, r)
#undef F16
	return _mm512_scalef_ps(p, n);
}

// exp_bf16 sets r[i] = bf16(exp_fma(x[i] − m)) and returns the float32 sum
// of the exponentials in 16 partial sums (lane j adds elements j, j+16, …
// of the whole 16-element chunks), added in lane order, then the tail in
// order; x is only read. The native loop rounds a chunk holding a nonzero
// denormal with to_bf16 (see denormals), so both loops give the same bits;
// only a chunk with a shifted score below DENORMAL_FROM can hold one
// (e^−87 ≈ 1.6·10⁻³⁸ is normal), and only such a chunk is tested.
#define DENORMAL_FROM -87.0f
FMA16_TARGET static float exp_bf16_native(const float *restrict x, uint16_t *restrict r, long n, float m) {
	__m512 vm = _mm512_set1_ps(m), acc = _mm512_setzero_ps(), lo = _mm512_set1_ps(DENORMAL_FROM);
	long i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 v = _mm512_sub_ps(_mm512_loadu_ps(x + i), vm);
		__m512 e = exp_fma16(v);
		acc = _mm512_add_ps(acc, e);
		if (_mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ) && denormals(e)) {
			float es[16];
			_mm512_storeu_ps(es, e);
			for (int j = 0; j < 16; j++) r[i + j] = to_bf16(es[j]);
			continue;
		}
		_mm256_storeu_si256((__m256i *)(r + i), (__m256i)_mm512_cvtneps_pbh(e));
	}
	float lanes[16];
	_mm512_storeu_ps(lanes, acc);
	float s = 0;
	for (int j = 0; j < 16; j++) s += lanes[j];
	for (; i < n; i++) {
		float e = exp_fma(x[i] - m);
		r[i] = to_bf16(e);
		s += e;
	}
	return s;
}

static float exp_bf16_plain(const float *restrict x, uint16_t *restrict r, long n, float m) {
	float acc[16] = {0};
	long i = 0;
	for (; i + 16 <= n; i += 16)
		for (int j = 0; j < 16; j++) {
			float e = exp_fma(x[i + j] - m);
			r[i + j] = to_bf16(e);
			acc[j] += e;
		}
	float s = 0;
	for (int j = 0; j < 16; j++) s += acc[j];
	for (; i < n; i++) {
		float e = exp_fma(x[i] - m);
		r[i] = to_bf16(e);
		s += e;
	}
	return s;
}

static int native_fma16(void) { return native_bf16() && __builtin_cpu_supports("fma"); }

static float exp_bf16(const float *x, uint16_t *r, long n, float m) {
	if (native_fma16()) return exp_bf16_native(x, r, n, m);
	return exp_bf16_plain(x, r, n, m);
}

// cskv_softmax_exp_bf16 is the softmax of the concatenation of a and b with
// the normalisation left to the caller: ra, rb = bf16(exp(· − m)) for the
// largest score m, inv = 1/Σ of the exponentials (a's sum plus b's, each
// as exp_bf16 sums): SoftmaxExpBF16.
cskv_shift cskv_softmax_exp_bf16(const float *a, long na, const float *b, long nb, uint16_t *ra, uint16_t *rb) {
	float m = max_of(b, nb, max_of(a, na, -__builtin_inff()));
	float sa = 0, sb = 0;
	if (na) sa = exp_bf16(a, ra, na, m);
	if (nb) sb = exp_bf16(b, rb, nb, m);
	return (cskv_shift){m, 1 / (sa + sb)};
}

// cskv_softmax_exp_bf16_rows is cskv_softmax_exp_bf16 on each of rows rows
// of a tile, in one call (SoftmaxExpBF16Rows): row r reads p[r·ldp + first,
// r·ldp + lo) and po[r·ldo + ofirst, r·ldo + olast) (span[4r…4r+3] = first,
// lo, ofirst, olast), writes their exponentials at the same places of p16
// and po16 and zeros in the rest of its ldp and ldo elements, and its shift
// and 1/Σ to st[2r], st[2r+1].
void cskv_softmax_exp_bf16_rows(const float *p, long ldp, const float *po, long ldo, uint16_t *p16, uint16_t *po16,
                                long rows, const int32_t *span, float *st) {
	for (long r = 0; r < rows; r++) {
		const int32_t *sp = span + 4 * r;
		long first = sp[0], lo = sp[1], of = sp[2], ol = sp[3];
		uint16_t *q = p16 + r * ldp, *qo = ldo ? po16 + r * ldo : NULL;
		cskv_shift sh = cskv_softmax_exp_bf16(p + r * ldp + first, lo - first, ldo ? po + r * ldo + of : NULL, ol - of,
		                                      q + first, qo ? qo + of : NULL);
		memset(q, 0, (size_t)first * 2);
		memset(q + lo, 0, (size_t)(ldp - lo) * 2);
		if (qo) {
			memset(qo, 0, (size_t)of * 2);
			memset(qo + ol, 0, (size_t)(ldo - ol) * 2);
		}
		st[2 * r] = sh.m;
		st[2 * r + 1] = sh.inv;
	}
}

// cskv_exp_bf16 sets r[i] = bf16(exp(x[i] − m)) as cskv_softmax_exp_bf16
// does (ExpBF16).
void cskv_exp_bf16(const float *x, uint16_t *r, long n, float m) { exp_bf16(x, r, n, m); }

// cskv_scale_diff_bf16 sets ds[i] = bf16(p[i]·(s[i] − d)·f) (ScaleDiffBF16).
__attribute__((target_clones("avx512f", "avx2", "default")))
static void scale_diff_bf16_plain(uint16_t *restrict ds, const float *restrict s, const uint16_t *restrict p, long n, float d, float f) {
	for (long i = 0; i < n; i++) ds[i] = to_bf16(from_bf16(p[i]) * (s[i] - d) * f);
}

BF16_TARGET static void scale_diff_bf16_native(uint16_t *restrict ds, const float *restrict s, const uint16_t *restrict p, long n, float d, float f) {
	__m512 vd = _mm512_set1_ps(d), vf = _mm512_set1_ps(f);
	long i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + i))), 16);
		__m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_castsi512_ps(w), _mm512_sub_ps(_mm512_loadu_ps(s + i), vd)), vf);
		if (denormals(v)) {
			for (int j = 0; j < 16; j++) ds[i + j] = to_bf16(from_bf16(p[i + j]) * (s[i + j] - d) * f);
			continue;
		}
		_mm256_storeu_si256((__m256i *)(ds + i), (__m256i)_mm512_cvtneps_pbh(v));
	}
	for (; i < n; i++) ds[i] = to_bf16(from_bf16(p[i]) * (s[i] - d) * f);
}

void cskv_scale_diff_bf16(uint16_t *restrict ds, const float *restrict s, const uint16_t *restrict p, long n, float d, float f) {
	if (native_bf16()) {
		scale_diff_bf16_native(ds, s, p, n, d, f);
		return;
	}
	scale_diff_bf16_plain(ds, s, p, n, d, f);
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
