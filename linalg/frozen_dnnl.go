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
	views      map[viewKey]*roundedView
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
	buf  []byte
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
	f := &frozenSlice{s: s, start: start, end: start + 4*uintptr(len(s)), views: map[viewKey]*roundedView{}}
	frozen.mu.Lock()
	defer frozen.mu.Unlock()
	if frozen.slices == nil {
		frozen.slices = map[uintptr]*frozenSlice{}
	}
	frozen.slices[start] = f
}

func thaw(s []float32) {
	if len(s) == 0 {
		return
	}
	frozen.mu.Lock()
	defer frozen.mu.Unlock()
	delete(frozen.slices, uintptr(unsafe.Pointer(&s[0])))
}

// frozenView returns the bf16 rounding of the operand view key of x when x
// lies inside a frozen slice (rounding it on first use), else nil.
func frozenView(p *gemmPrim, scratch *[]byte, x []float32, key viewKey) unsafe.Pointer {
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
	f.mu.Lock()
	v := f.views[key]
	if v == nil {
		v = &roundedView{}
		f.views[key] = v
	}
	f.mu.Unlock()
	v.once.Do(func() {
		size, mask := p.g.a_bytes, C.int(C.CSKV_CONVERT_A|C.CSKV_CONVERT_ONLY)
		if key.role == C.CSKV_CONVERT_B {
			size, mask = p.g.b_bytes, C.CSKV_CONVERT_B|C.CSKV_CONVERT_ONLY
		}
		v.buf = make([]byte, size)
		buf, src := unsafe.Pointer(&v.buf[0]), (*C.float)(&x[0])
		if st := C.cskv_gemm_run(&p.g, src, src, nil, buf, buf, ptr(scratch), 1, mask); st != 0 {
			v.err = fmt.Errorf("oneDNN: rounding a frozen operand failed (status %d)", int(st))
		}
	})
	if v.err != nil {
		panic("linalg: " + v.err.Error())
	}
	return unsafe.Pointer(&v.buf[0])
}

// frozenCount is the number of frozen slices (for tests).
func frozenCount() int {
	frozen.mu.Lock()
	defer frozen.mu.Unlock()
	return len(frozen.slices)
}
