//go:build openblas

// oneDNN matrix products for package linalg (see dnnl.go). One cskv_gemm is
// a matmul primitive for one shape, layout and precision, plus, for bf16, the
// two reorders that round the float32 operands to bf16. Primitives run with
// user-provided scratchpads, so one may execute on several threads at once.

#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#include "dnnl_gemm.h"

// DENSE_C_MACS: bf16 products from this size with a strided C compute a
// dense C and add it (cskv_gemm_create).
#define DENSE_C_MACS (1 << 20)

static dnnl_engine_t engine;
static __thread dnnl_stream_t stream;
static void (*set_threads)(int);

int cskv_dnnl_init(void) {
	if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return -1;
	// oneDNN is built on OpenMP here; its thread count is the calling
	// thread's OpenMP setting, looked up in the process rather than linked.
	set_threads = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
	return 0;
}

static dnnl_stream_t thread_stream(void) {
	if (!stream && dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) return NULL;
	return stream;
}

static void use_threads(int n) {
	if (set_threads && n > 0) set_threads(n);
}

// strided describes a float32 (rows, cols) view of a buffer with leading
// dimension ld, transposed when t (stored (cols, rows)).
static int strided(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, int64_t ld, int t, dnnl_data_type_t dt) {
	dnnl_dims_t dims = {rows, cols};
	dnnl_dims_t strides = {ld, 1};
	if (t) {
		strides[0] = 1;
		strides[1] = ld;
	}
	return dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides);
}

static int user_scratchpad(dnnl_primitive_attr_t *attr) {
	if (dnnl_primitive_attr_create(attr) != dnnl_success) return -1;
	return dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
}

static size_t scratch_size(const_dnnl_primitive_desc_t pd) {
	const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	return md ? dnnl_memory_desc_get_size(md) : 0;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

// reorder creates the primitive that copies src into dst.
static int reorder(dnnl_primitive_t *p, size_t *scratch, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst) {
	dnnl_primitive_attr_t attr;
	dnnl_primitive_desc_t pd;
	int st = user_scratchpad(&attr);
	if (st) return st;
	st = dnnl_reorder_primitive_desc_create(&pd, src, engine, dst, engine, attr);
	dnnl_primitive_attr_destroy(attr);
	if (st != dnnl_success) return st;
	*scratch = max_size(*scratch, scratch_size(pd));
	st = dnnl_primitive_create(p, pd);
	dnnl_primitive_desc_destroy(pd);
	return st;
}

int cskv_gemm_create(cskv_gemm *g, int bf16, int a16, int b16, int ta, int tb, int64_t m, int64_t n, int64_t k,
                     int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta, int threads) {
	memset(g, 0, sizeof *g);
	g->bf16 = bf16;
	g->m = m;
	g->n = n;
	g->ldc = ldc;
	g->beta = beta;
	// oneDNN's AMX and AVX512-BF16 kernels (brgemm) take a dense C only;
	// with a strided one it falls back to a generic kernel (gemm:jit),
	// measured 4–11× slower on the frozen forward's P·V tiles (128 rows,
	// ldc 4096). So a bf16 product with a strided C of at least
	// DENSE_C_MACS multiply-adds writes a dense C into its scratchpad and
	// adds it (TestStridedC); below it (stories260K's tiles, 64 × 8 × 256)
	// the generic kernel measured faster.
	g->dense_c = bf16 && ldc != n && m * n * k >= DENSE_C_MACS;
	use_threads(threads);
	int st;
	dnnl_memory_desc_t a_md, b_md;
	if (!bf16 && (a16 || b16)) return -1;
	if ((st = strided(&g->a_user, m, k, lda, ta, a16 ? dnnl_bf16 : dnnl_f32)) ||
	    (st = strided(&g->b_user, k, n, ldb, tb, b16 ? dnnl_bf16 : dnnl_f32)) ||
	    (st = strided(&g->c_md, m, n, g->dense_c ? n : ldc, 0, dnnl_f32)))
		return st;
	if (bf16) {
		// A rounded to a dense row-major (m, k); B to a dense copy in the
		// orientation it is stored in.
		// An operand given in bf16 densely in either orientation is read
		// as it lies (no reorder, ra or rb NULL): the brgemm kernels take
		// a transposed A too (attention's dV̂ = Eᵀ·dO reads its bf16
		// exponentials E (k, m) so).
		int a_as_is = a16 && lda == (ta ? m : k), b_as_is = b16 && ldb == (tb ? k : n);
		if ((st = a_as_is ? strided(&a_md, m, k, lda, ta, dnnl_bf16) : strided(&a_md, m, k, k, 0, dnnl_bf16)) ||
		    (st = strided(&b_md, k, n, tb ? k : n, tb, dnnl_bf16)))
			return st;
		if ((!a_as_is && (st = reorder(&g->ra, &g->scratch, &g->a_user, &a_md))) ||
		    (!b_as_is && (st = reorder(&g->rb, &g->scratch, &g->b_user, &b_md))))
			return st;
		g->a_bytes = a_as_is ? 0 : dnnl_memory_desc_get_size(&a_md);
		g->b_bytes = b_as_is ? 0 : dnnl_memory_desc_get_size(&b_md);
		g->a_md = a_md;
		g->b_md = b_md;
	} else {
		g->a_md = g->a_user;
		g->b_md = g->b_user;
	}
	dnnl_matmul_desc_t desc;
	if ((st = dnnl_matmul_desc_init(&desc, &g->a_md, &g->b_md, NULL, &g->c_md))) return st;
	dnnl_primitive_attr_t attr;
	if ((st = user_scratchpad(&attr))) return st;
	if (alpha != 1) st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha);
	if (!st && beta != 0 && !g->dense_c) {
		dnnl_post_ops_t ops;
		st = dnnl_post_ops_create(&ops);
		if (!st) st = dnnl_post_ops_append_sum(ops, beta);
		if (!st) st = dnnl_primitive_attr_set_post_ops(attr, ops);
		dnnl_post_ops_destroy(ops);
	}
	dnnl_primitive_desc_t pd = NULL;
	if (!st) st = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
	dnnl_primitive_attr_destroy(attr);
	if (st) return st;
	const char *impl = NULL;
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl) {
		strncpy(g->impl, impl, sizeof g->impl - 1);
	}
	g->scratch = max_size(g->scratch, scratch_size(pd));
	if (g->dense_c) {
		g->c_off = (g->scratch + 63) & ~(size_t)63;
		g->scratch = g->c_off + (size_t)m * (size_t)n * sizeof(float);
	}
	st = dnnl_primitive_create(&g->mm, pd);
	dnnl_primitive_desc_destroy(pd);
	return st;
}

void cskv_gemm_destroy(cskv_gemm *g) {
	if (g->mm) dnnl_primitive_destroy(g->mm);
	if (g->ra) dnnl_primitive_destroy(g->ra);
	if (g->rb) dnnl_primitive_destroy(g->rb);
	memset(g, 0, sizeof *g);
}

// run executes p on its arguments (memory objects made over the given
// buffers, destroyed after).
static int run(dnnl_primitive_t p, int n, const int *args, const dnnl_memory_desc_t **mds, void **ptrs,
               const dnnl_memory_desc_t *scratch_md, void *scratch) {
	dnnl_exec_arg_t ea[4];
	int st = 0, made = 0;
	for (int i = 0; i < n && !st; i++, made++) {
		ea[i].arg = args[i];
		st = dnnl_memory_create(&ea[i].memory, mds[i], engine, ptrs[i]);
	}
	if (!st && scratch_md) {
		ea[made].arg = DNNL_ARG_SCRATCHPAD;
		st = dnnl_memory_create(&ea[made].memory, scratch_md, engine, scratch);
		if (!st) made++;
	}
	dnnl_stream_t s = thread_stream();
	if (!st && !s) st = -1;
	if (!st) st = dnnl_primitive_execute(p, s, made, ea);
	if (!st) st = dnnl_stream_wait(s);
	for (int i = 0; i < made; i++) dnnl_memory_destroy(ea[i].memory);
	return st;
}

// add_dense sets the strided C (m, n) to beta·C + D, D dense (alpha·A·B
// from the matmul): beta·C first, then one addition, as the sum post-op
// computes it.
static void add_dense(float *c, int64_t ldc, const float *d, int64_t m, int64_t n, float beta) {
	for (int64_t i = 0; i < m; i++) {
		float *ci = c + i * ldc;
		const float *di = d + i * n;
		if (beta == 0) {
			memcpy(ci, di, (size_t)n * sizeof(float));
		} else if (beta == 1) {
			for (int64_t j = 0; j < n; j++) ci[j] += di[j];
		} else {
			for (int64_t j = 0; j < n; j++) ci[j] = beta * ci[j] + di[j];
		}
	}
}

// scratch_md describes a user scratchpad of n bytes in *md and returns it
// (NULL when n is 0); *st is set on failure.
static const dnnl_memory_desc_t *scratch_md(dnnl_memory_desc_t *md, size_t n, int *st) {
	*st = 0;
	if (!n) return NULL;
	dnnl_dims_t d = {(int64_t)n};
	if (dnnl_memory_desc_init_by_tag(md, 1, d, dnnl_u8, dnnl_a)) *st = -1;
	return md;
}

int cskv_gemm_run(const cskv_gemm *g, const float *a, const float *b, float *c, void *abuf, void *bbuf,
                  void *scratch, int threads, int convert) {
	use_threads(threads);
	dnnl_memory_desc_t smd;
	int st;
	const dnnl_memory_desc_t *sp = scratch_md(&smd, g->scratch, &st);
	if (st) return st;
	const void *src = a, *wei = b;
	if (g->bf16) {
		int io[2] = {DNNL_ARG_FROM, DNNL_ARG_TO};
		if ((convert & CSKV_CONVERT_A) && g->ra) {
			const dnnl_memory_desc_t *amd[2] = {&g->a_user, &g->a_md};
			void *ap[2] = {(void *)a, abuf};
			if ((st = run(g->ra, 2, io, amd, ap, sp, scratch))) return st;
		}
		if ((convert & CSKV_CONVERT_B) && g->rb) {
			const dnnl_memory_desc_t *bmd[2] = {&g->b_user, &g->b_md};
			void *bp[2] = {(void *)b, bbuf};
			if ((st = run(g->rb, 2, io, bmd, bp, sp, scratch))) return st;
		}
		src = g->ra ? abuf : a;
		wei = g->rb ? bbuf : b;
	}
	if (convert & CSKV_CONVERT_ONLY) return 0;
	int mm[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
	const dnnl_memory_desc_t *mds[3] = {&g->a_md, &g->b_md, &g->c_md};
	float *dense = g->dense_c ? (float *)((char *)scratch + g->c_off) : c;
	void *ptrs[3] = {(void *)src, (void *)wei, dense};
	st = run(g->mm, 3, mm, mds, ptrs, sp, scratch);
	if (st || !g->dense_c) return st;
	add_dense(c, g->ldc, dense, g->m, g->n, g->beta);
	return 0;
}

int cskv_round_create(cskv_round *r, int64_t rows, int64_t cols, int64_t ld, int threads) {
	memset(r, 0, sizeof *r);
	use_threads(threads);
	int st;
	if ((st = strided(&r->src, rows, cols, ld, 0, dnnl_f32)) || (st = strided(&r->dst, rows, cols, cols, 0, dnnl_bf16)))
		return st;
	if ((st = reorder(&r->r, &r->scratch, &r->src, &r->dst))) return st;
	r->bytes = dnnl_memory_desc_get_size(&r->dst);
	return 0;
}

int cskv_round_run(const cskv_round *r, const float *src, void *dst, void *scratch, int threads) {
	use_threads(threads);
	dnnl_memory_desc_t smd;
	int st;
	const dnnl_memory_desc_t *sp = scratch_md(&smd, r->scratch, &st);
	if (st) return st;
	int io[2] = {DNNL_ARG_FROM, DNNL_ARG_TO};
	const dnnl_memory_desc_t *mds[2] = {&r->src, &r->dst};
	void *ptrs[2] = {(void *)src, dst};
	return run(r->r, 2, io, mds, ptrs, sp, scratch);
}

void cskv_round_destroy(cskv_round *r) {
	if (r->r) dnnl_primitive_destroy(r->r);
	memset(r, 0, sizeof *r);
}
