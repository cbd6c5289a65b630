// oneDNN matrix products for package linalg (see dnnl.go and dnnl.c).

#include <stddef.h>
#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>

typedef struct {
	int bf16;
	dnnl_primitive_t mm;     // C = alpha·op(A)·op(B) + beta·C
	dnnl_primitive_t ra, rb; // bf16 only: float32 A, B rounded to bf16
	dnnl_memory_desc_t a_user, b_user, c_md; // the caller's float32 buffers
	dnnl_memory_desc_t a_md, b_md;           // the matmul's operands
	size_t a_bytes, b_bytes;                 // bf16 operand buffers
	size_t scratch;                          // scratchpad bytes (largest of the three, plus dense C)
	int64_t m, n, ldc;                       // C's shape and leading dimension
	float beta;
	size_t c_off;                            // dense_c: where in the scratchpad the dense C lies
	int dense_c;                             // bf16 with C strided: the matmul writes a dense C, then C = beta·C + it
	char impl[96];                           // the matmul kernel oneDNN chose
} cskv_gemm;

// cskv_round rounds a float32 (rows, cols) view with leading dimension ld
// into a dense row-major bf16 copy (frozen operands, frozen_dnnl.go).
typedef struct {
	dnnl_primitive_t r;
	dnnl_memory_desc_t src, dst;
	size_t bytes, scratch; // the bf16 copy; the scratchpad
} cskv_round;

int cskv_round_create(cskv_round *r, int64_t rows, int64_t cols, int64_t ld, int threads);
int cskv_round_run(const cskv_round *r, const float *src, void *dst, void *scratch, int threads);
void cskv_round_destroy(cskv_round *r);

// cskv_gemm_run's convert: which float32 operands to round into abuf, bbuf
// (bf16 only; the others are there already), and whether to stop there.
enum { CSKV_CONVERT_A = 1, CSKV_CONVERT_B = 2, CSKV_CONVERT_ONLY = 4 };

int cskv_dnnl_init(void);
int cskv_gemm_create(cskv_gemm *g, int bf16, int a16, int b16, int ta, int tb, int64_t m, int64_t n, int64_t k,
                     int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta, int threads);
void cskv_gemm_destroy(cskv_gemm *g);
int cskv_gemm_run(const cskv_gemm *g, const float *a, const float *b, float *c, void *abuf, void *bbuf,
                  void *scratch, int threads, int convert);
