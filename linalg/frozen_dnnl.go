//go:build openblas

package linalg

// #include "dnnl_gemm.h"
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// frozenSlice is a slice registered by Freeze, with the bf16 roundings of
// the views products have read from it.
type frozenSlice struct {
	s          []float32 // held, so that its memory is not reused while frozen
	start, end uintptr
	mu         sync.Mutex
	views      map[rounding]*roundedView
	// arena holds the row-major roundings, one after another, up to 2
	// bytes per element of s (one buffer per slice however many views:
	// attention freezes each sequence's keys and rounds them per head).
	arena *[]byte
	used  int
}

// carve returns n bytes of f's arena (allocating it on first use), or nil
// when it is full; f.mu is held.
func (f *frozenSlice) carve(n int) []byte {
	if f.arena == nil {
		f.arena = getBuf(2 * len(f.s))
		*f.arena = (*f.arena)[:2*len(f.s)]
	}
	off := (f.used + 63) &^ 63
	if off+n > len(*f.arena) {
		return nil
	}
	f.used = off + n
	return (*f.arena)[off : off+n : off+n]
}

// recycle gives f's buffers back to the free list (those of at most limit
// bytes), with f.mu held.
func (f *frozenSlice) recycle(limit int) {
	for _, v := range f.views {
		if v.buf != nil && !v.carved && cap(*v.buf) <= limit {
			putBuf(v.buf)
		}
	}
	if f.arena != nil && cap(*f.arena) <= limit {
		putBuf(f.arena)
	}
	f.arena, f.used = nil, 0
}

// rounding is what a rounded view holds: the stored (rows, cols) block at
// ptr with leading dimension ld, densely in bf16, row-major or (transposed)
// column-major. A product rounds A into a dense row-major op(A) and B into
// the orientation it is stored in, so a step's input read untransposed as
// A (X·Aᵀ) and as B (dCᵀ·X) shares one rounding.
//
// A row-major rounding covers every row of its slice from ptr on (rowsFrom):
// a view of fewer rows reads its first rows·cols values, so the prefixes
// [0, t1) of a head's keys that attention's tiles read share one rounding.
type rounding struct {
	ptr            uintptr
	rows, cols, ld int
	transposed     bool
}

// viewKey is one operand view: role CSKV_CONVERT_A or _B, the logical
// (rows, cols) operand at ptr with leading dimension ld, transposed when t.
type viewKey struct {
	ptr            uintptr
	role           int
	rows, cols, ld int
	t              bool
}

// roundedView is a view rounded to bf16 in the layout the product reads.
type roundedView struct {
	once   sync.Once
	buf    *[]byte // from getBuf, or (carved) from the slice's arena
	carved bool
	err    error
}

var frozen struct {
	mu     sync.Mutex
	slices map[uintptr]*frozenSlice // by start address
}

func freeze(s []float32) {
	if len(s) == 0 {
		return
	}
	start := uintptr(unsafe.Pointer(&s[0]))
	f := &frozenSlice{s: s, start: start, end: start + 4*uintptr(len(s)), views: map[rounding]*roundedView{}}
	frozen.mu.Lock()
	defer frozen.mu.Unlock()
	if frozen.slices == nil {
		frozen.slices = map[uintptr]*frozenSlice{}
	}
	frozen.slices[start].release()
	frozen.slices[start] = f
}

// release gives f's roundings back to the buffer free list when its slice
// is frozen again with new contents (a step's input), so that the next
// roundings reuse their pages instead of faulting in new ones.
func (f *frozenSlice) release() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recycle(maxFreeBytes)
	f.views = map[rounding]*roundedView{}
}

func thaw(s []float32) {
	if len(s) == 0 {
		return
	}
	frozen.mu.Lock()
	defer frozen.mu.Unlock()
	start := uintptr(unsafe.Pointer(&s[0]))
	// Roundings above maxRecycled are left to the collector: a thawed
	// block's weights (hundreds of MiB in bf16 at 7B) must not stay in the
	// free list through the layer's training. Smaller ones (attention's
	// per-head keys and values, frozen for one call) go back to it.
	if f := frozen.slices[start]; f != nil {
		f.mu.Lock()
		f.recycle(maxRecycled)
		f.views = nil
		f.mu.Unlock()
	}
	delete(frozen.slices, start)
}

// maxRecycled is the largest rounding a thaw gives back to the free list.
const maxRecycled = 16 << 20

// rowsFrom is how many rows of cols values with leading dimension ld lie in
// f from ptr on.
func (f *frozenSlice) rowsFrom(ptr uintptr, cols, ld int) int {
	return (int(f.end-ptr)/4-cols)/ld + 1
}

// frozenView returns the bf16 rounding of the operand view key of x when x
// lies inside a frozen slice (rounding it on first use), else nil.
func frozenView(p *gemmPrim, scratch *[]byte, threads int, x []float32, key viewKey) unsafe.Pointer {
	frozen.mu.Lock()
	if len(frozen.slices) == 0 {
		frozen.mu.Unlock()
		return nil
	}
	key.ptr = uintptr(unsafe.Pointer(&x[0]))
	stored, cols := key.rows, key.cols
	if key.t {
		stored, cols = cols, stored
	}
	extent := 4 * uintptr((stored-1)*key.ld+cols)
	var f *frozenSlice
	for _, s := range frozen.slices {
		if key.ptr >= s.start && key.ptr+extent <= s.end {
			f = s
			break
		}
	}
	frozen.mu.Unlock()
	if f == nil {
		return nil
	}
	rowMajor := !(key.role == C.CSKV_CONVERT_A && key.t)
	r := rounding{ptr: key.ptr, rows: stored, cols: cols, ld: key.ld, transposed: !rowMajor}
	if rowMajor {
		r.rows = f.rowsFrom(key.ptr, cols, key.ld)
	}
	f.mu.Lock()
	if f.views == nil { // thawed meanwhile
		f.mu.Unlock()
		return nil
	}
	v := f.views[r]
	if v == nil {
		v = &roundedView{}
		f.views[r] = v
	}
	f.mu.Unlock()
	v.once.Do(func() {
		if rowMajor {
			src := unsafe.Pointer(&f.s[(key.ptr-f.start)/4])
			f.mu.Lock()
			dst := f.carve(2 * r.rows * cols)
			f.mu.Unlock()
			// A rounding that cannot be made (the primitive cache full)
			// leaves the view unrounded: its products round their operand.
			if buf, err := roundRows((*C.float)(src), r.rows, cols, key.ld, threads, dst); err == nil {
				v.buf, v.carved = buf, dst != nil
			}
			return
		}
		size, mask := p.g.a_bytes, C.int(C.CSKV_CONVERT_A|C.CSKV_CONVERT_ONLY)
		if key.role == C.CSKV_CONVERT_B {
			size, mask = p.g.b_bytes, C.CSKV_CONVERT_B|C.CSKV_CONVERT_ONLY
		}
		v.buf = getBuf(int(size))
		*v.buf = (*v.buf)[:size]
		buf, src := ptr(v.buf), (*C.float)(&x[0])
		if st := C.cskv_gemm_run(&p.g, src, src, nil, buf, buf, ptr(scratch), C.int(threads), mask); st != 0 {
			v.err = fmt.Errorf("oneDNN: rounding a frozen operand failed (status %d)", int(st))
		}
	})
	if v.err != nil {
		panic("linalg: " + v.err.Error())
	}
	if v.buf == nil {
		return nil
	}
	return ptr(v.buf)
}

// frozenCount is the number of frozen slices (for tests).
func frozenCount() int {
	frozen.mu.Lock()
	defer frozen.mu.Unlock()
	return len(frozen.slices)
}

// roundPrims caches the rounding primitives by (rows, cols, ld, threads).
var roundPrims struct {
	mu sync.Mutex
	m  map[[4]int]*C.cskv_round
}

// roundRows rounds the float32 (rows, cols) block at src with leading
// dimension ld into a dense row-major bf16 buffer: dst when it is not nil,
// else one from the free list.
func roundRows(src *C.float, rows, cols, ld, threads int, dst []byte) (*[]byte, error) {
	key := [4]int{rows, cols, ld, threads}
	roundPrims.mu.Lock()
	if roundPrims.m == nil {
		roundPrims.m = map[[4]int]*C.cskv_round{}
	}
	r := roundPrims.m[key]
	if r == nil {
		if len(roundPrims.m) >= maxPrims {
			roundPrims.mu.Unlock()
			return nil, fmt.Errorf("oneDNN: more than %d rounding shapes", maxPrims)
		}
		r = new(C.cskv_round)
		if st := C.cskv_round_create(r, C.int64_t(rows), C.int64_t(cols), C.int64_t(ld), C.int(threads)); st != 0 {
			C.cskv_round_destroy(r)
			roundPrims.mu.Unlock()
			return nil, fmt.Errorf("oneDNN: no rounding for %d×%d (ld %d): status %d", rows, cols, ld, int(st))
		}
		roundPrims.m[key] = r
	}
	roundPrims.mu.Unlock()
	buf := &dst
	if dst == nil {
		buf = getBuf(int(r.bytes))
	}
	sb := getBuf(int(r.scratch))
	*buf, *sb = (*buf)[:r.bytes], (*sb)[:r.scratch]
	defer putBuf(sb)
	if st := C.cskv_round_run(r, src, ptr(buf), ptr(sb), C.int(threads)); st != 0 {
		return nil, fmt.Errorf("oneDNN: rounding a frozen operand failed (status %d)", int(st))
	}
	return buf, nil
}
