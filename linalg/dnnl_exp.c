//go:build openblas

// ExpShift of package linalg (exp.go) in C, so that the compiler vectorises
// it: the same operations in the same order, no fused multiply-adds
// (fp-contract=off), hence the same bits as the Go version.

#pragma GCC optimize("fp-contract=off")

#include <stdint.h>
#include <string.h>

__attribute__((target_clones("avx512f", "avx2", "default")))
static void exp_shift(float *restrict x, long n, float m) {
	for (long i = 0; i < n; i++) {
		float v = x[i] - m;
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
		x[i] = (p * r * r + r + 1) * two;
	}
}

float cskv_exp_shift(float *x, long n, float m) {
	exp_shift(x, n, m);
	float s = 0;
	for (long i = 0; i < n; i++) s += x[i];
	return s;
}
