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
}

// rounding is what a rounded view holds: the stored (rows, cols) block at
// ptr with leading dimension ld, densely in bf16, row-major or (transposed)
// column-major. A product rounds A into a dense row-major op(A) and B into
// the orientation it is stored in, so a step's input read untransposed as
// A (X·Aᵀ) and as B (dCᵀ·X) shares one rounding.
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
	once sync.Once
	buf  *[]byte // from getBuf
	err  error
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
	for _, v := range f.views {
		if v.buf != nil {
			putBuf(v.buf)
		}
	}
	f.views = map[rounding]*roundedView{}
}

func thaw(s []float32) {
	if len(s) == 0 {
		return
	}
	frozen.mu.Lock()
	defer frozen.mu.Unlock()
	// The roundings are left to the collector: a thawed block's weights
	// (hundreds of MiB in bf16 at 7B) must not stay in the free list
	// through the layer's training.
	delete(frozen.slices, uintptr(unsafe.Pointer(&s[0])))
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
	r := rounding{ptr: key.ptr, rows: stored, cols: cols, ld: key.ld, transposed: key.role == C.CSKV_CONVERT_A && key.t}
	f.mu.Lock()
	v := f.views[r]
	if v == nil {
		v = &roundedView{}
		f.views[r] = v
	}
	f.mu.Unlock()
	v.once.Do(func() {
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
	return ptr(v.buf)
}

// frozenCount is the number of frozen slices (for tests).
func frozenCount() int {
	frozen.mu.Lock()
	defer frozen.mu.Unlock()
	return len(frozen.slices)
}
