//go:build openblas

package linalg

// #cgo LDFLAGS: -ldnnl
// #include "dnnl_gemm.h"
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

const hasDNNL = true

// gemmKey is everything a oneDNN matmul primitive is specialised on.
type gemmKey struct {
	bf16, tA, tB  bool
	a16, b16      bool // the operand is given in bf16 (GemmBF16)
	m, n, k       int
	lda, ldb, ldc int
	alpha, beta   float32
	threads       int
}

// gemmPrim is one created primitive (ok false: oneDNN has no kernel for it,
// and BLAS computes that product).
type gemmPrim struct {
	g  C.cskv_gemm
	ok bool
}

// maxPrims bounds the primitive cache; products of further shapes use BLAS.
const maxPrims = 4096

var dnnlState struct {
	once  sync.Once
	err   error
	mu    sync.Mutex
	prims map[gemmKey]*gemmPrim
}

func dnnlInit() error {
	dnnlState.once.Do(func() {
		if C.cskv_dnnl_init() != 0 {
			dnnlState.err = fmt.Errorf("oneDNN: no CPU engine")
		}
		dnnlState.prims = map[gemmKey]*gemmPrim{}
	})
	return dnnlState.err
}

// prim returns the primitive for key, creating it on first use (creation
// JIT-compiles the kernel; it is done once per shape).
func prim(key gemmKey) *gemmPrim {
	if dnnlInit() != nil {
		return nil
	}
	dnnlState.mu.Lock()
	defer dnnlState.mu.Unlock()
	if p, ok := dnnlState.prims[key]; ok {
		return p
	}
	if len(dnnlState.prims) >= maxPrims {
		return nil
	}
	p := &gemmPrim{}
	st := C.cskv_gemm_create(&p.g, cbool(key.bf16), cbool(key.a16), cbool(key.b16), cbool(key.tA), cbool(key.tB),
		C.int64_t(key.m), C.int64_t(key.n), C.int64_t(key.k),
		C.int64_t(key.lda), C.int64_t(key.ldb), C.int64_t(key.ldc),
		C.float(key.alpha), C.float(key.beta), C.int(key.threads))
	if st == 0 {
		p.ok = true
	} else {
		C.cskv_gemm_destroy(&p.g)
	}
	dnnlState.prims[key] = p
	return p
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// bufs is the free list of the bf16 operand and scratchpad buffers of
// oneDNN calls: a call takes the smallest free buffer that fits (else
// allocates one) and gives it back. Unlike a sync.Pool, which every
// collection empties and which handed a zero-sized request the large
// scratchpad, it keeps its buffers, so their pages are touched once; it
// holds at most maxFreeBytes in maxFreeBufs buffers.
var bufs struct {
	mu    sync.Mutex
	free  []*[]byte
	bytes int
}

const (
	maxFreeBytes = 256 << 20
	maxFreeBufs  = 64 // the list is searched whole on every call
)

var noBuf = []byte{}

func getBuf(n int) *[]byte {
	if n == 0 {
		return &noBuf
	}
	bufs.mu.Lock()
	best := -1
	for i, b := range bufs.free {
		if cap(*b) >= n && (best < 0 || cap(*b) < cap(*bufs.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := bufs.free[best]
		last := len(bufs.free) - 1
		bufs.free[best], bufs.free = bufs.free[last], bufs.free[:last]
		bufs.bytes -= cap(*b)
		bufs.mu.Unlock()
		return b
	}
	bufs.mu.Unlock()
	b := make([]byte, n)
	return &b
}

// putBuf gives b back to the free list (or to the collector when the list
// is full).
func putBuf(b *[]byte) {
	if cap(*b) == 0 {
		return
	}
	bufs.mu.Lock()
	if bufs.bytes+cap(*b) <= maxFreeBytes && len(bufs.free) < maxFreeBufs {
		bufs.free = append(bufs.free, b)
		bufs.bytes += cap(*b)
	}
	bufs.mu.Unlock()
}

func ptr(b *[]byte) unsafe.Pointer {
	if len(*b) == 0 {
		return nil
	}
	return unsafe.Pointer(&(*b)[0])
}

// dnnlThreads is the thread count oneDNN runs an (m, n, k) product with:
// the BLAS setting, or 1 below serialMACs or when serial.
func dnnlThreads(serial bool, m, n, k int) int {
	if serial || m*n*k < serialMACs {
		return 1
	}
	return max(1, Threads())
}

// dnnlGemm computes C = alpha·op(A)·op(B) + beta·C through oneDNN (on the
// calling thread alone when serial) and reports false when oneDNN has no
// kernel for it (nothing is written then).
func dnnlGemm(bf16, serial, tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
	return dnnlProduct(bf16, serial, m, n, k, alpha, Operand{F32: a, LD: lda, T: tA}, Operand{F32: b, LD: ldb, T: tB}, beta, c, ldc)
}

// dnnlProduct is dnnlGemm with operands that may be given in bf16 (bf16
// products only).
func dnnlProduct(bf16, serial bool, m, n, k int, alpha float32, a, b Operand, beta float32, c []float32, ldc int) bool {
	key := gemmKey{bf16: bf16, tA: a.T, tB: b.T, a16: a.F32 == nil, b16: b.F32 == nil, m: m, n: n, k: k,
		lda: a.LD, ldb: b.LD, ldc: ldc, alpha: alpha, beta: beta, threads: dnnlThreads(serial, m, n, k)}
	p := prim(key)
	if p == nil || !p.ok {
		return false
	}
	ab, bb, sb := getBuf(int(p.g.a_bytes)), getBuf(int(p.g.b_bytes)), getBuf(int(p.g.scratch))
	*ab, *bb, *sb = (*ab)[:p.g.a_bytes], (*bb)[:p.g.b_bytes], (*sb)[:p.g.scratch]
	pa, pb := ptr(ab), ptr(bb)
	convert := C.int(C.CSKV_CONVERT_A | C.CSKV_CONVERT_B)
	// Float32 operands inside a frozen slice are rounded once per view.
	if bf16 && a.F32 != nil {
		if v := frozenView(p, sb, key.threads, a.F32, viewKey{role: C.CSKV_CONVERT_A, rows: m, cols: k, ld: a.LD, t: a.T}); v != nil {
			pa, convert = v, convert&^C.CSKV_CONVERT_A
		}
	}
	if bf16 && b.F32 != nil {
		if v := frozenView(p, sb, key.threads, b.F32, viewKey{role: C.CSKV_CONVERT_B, rows: k, cols: n, ld: b.LD, t: b.T}); v != nil {
			pb, convert = v, convert&^C.CSKV_CONVERT_B
		}
	}
	st := C.cskv_gemm_run(&p.g, (*C.float)(a.first()), (*C.float)(b.first()), (*C.float)(&c[0]),
		pa, pb, ptr(sb), C.int(key.threads), convert)
	putBuf(ab)
	putBuf(bb)
	putBuf(sb)
	if st != 0 {
		panic(fmt.Sprintf("linalg: oneDNN matmul %dx%dx%d failed after creation (status %d)", m, n, k, int(st)))
	}
	return true
}

// first is the address of o's first element.
func (o Operand) first() unsafe.Pointer {
	if o.F32 != nil {
		return unsafe.Pointer(&o.F32[0])
	}
	return unsafe.Pointer(&o.BF16[0])
}

// dnnlPeakProduct prepares oneDNN's dense product C (m, n) = A (m, k)·B (k,
// n) for timing: operands of its own, rounded to bf16 once (bf16), the
// product run once to warm up; run computes it on the rounded operands.
func dnnlPeakProduct(bf16 bool, m, n, k int) (peakProduct, error) {
	key := gemmKey{bf16: bf16, m: m, n: n, k: k, lda: k, ldb: n, ldc: n, alpha: 1, threads: dnnlThreads(false, m, n, k)}
	p := prim(key)
	if p == nil || !p.ok {
		return peakProduct{}, fmt.Errorf("oneDNN has no %s kernel for %d×%d×%d", map[bool]string{false: "f32", true: "bf16"}[bf16], m, k, n)
	}
	a, b, c := peakOperands(m, n, k)
	ab, bb, sb := make([]byte, p.g.a_bytes+1), make([]byte, p.g.b_bytes+1), make([]byte, p.g.scratch+1)
	run := func(convert C.int) C.int { // 0: operands already rounded
		return C.cskv_gemm_run(&p.g, (*C.float)(&a[0]), (*C.float)(&b[0]), (*C.float)(&c[0]),
			unsafe.Pointer(&ab[0]), unsafe.Pointer(&bb[0]), unsafe.Pointer(&sb[0]), C.int(key.threads), convert)
	}
	if st := run(C.CSKV_CONVERT_A | C.CSKV_CONVERT_B); st != 0 { // rounds the operands; also warms up
		return peakProduct{}, fmt.Errorf("oneDNN matmul failed (status %d)", int(st))
	}
	return peakProduct{run: func() { run(0) }, flop: 2 * float64(m) * float64(n) * float64(k),
		kernel: "oneDNN " + C.GoString(&p.g.impl[0])}, nil
}
