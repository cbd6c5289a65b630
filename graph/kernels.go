package graph

import (
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"

	"github.com/cskv/cskv/attn"
	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

// float is the element type of a graph: float32 for training, float64 for
// gradient checks.
type float = attn.Float

// linear is Y = X·Wᵀ (+ bias on every row): X (m, k), W (n, k), Y (m, n).
func linear[T float](y, x, w, bias []T, m, n, k int) {
	attn.Gemm(false, true, m, n, k, 1, x, k, w, k, 0, y, n)
	if bias != nil {
		for i := 0; i < m; i++ {
			row := y[i*n : i*n+n]
			for j, b := range bias[:n] {
				row[j] += b
			}
		}
	}
}

// convert copies src into dst of another float type.
func convert[D, S float](dst []D, src []S) {
	for i, v := range src[:len(dst)] {
		dst[i] = D(v)
	}
}

// sqDiff stores diff = a − b and returns Σ diff² (accumulated in float64;
// from minSplit elements on, in one partial sum per core, added in order).
func sqDiff[T float](diff, a, b []T) float64 {
	return split(len(a), func(lo, hi int) float64 { return sqDiffPart(diff[lo:hi], a[lo:hi], b[lo:hi]) })
}

// minSplit is the fewest elements from which the elementwise loss kernels
// split their work between the cores (a wide layer's K̂ of 2048 × 1024);
// below it (stories260K) they run as one loop, with the bits they always had.
const minSplit = 1 << 20

// split runs part on GOMAXPROCS contiguous ranges of [0, n) at once from
// minSplit on (else on [0, n)) and returns the sum of the parts' results in
// range order.
func split(n int, part func(lo, hi int) float64) float64 {
	parts := runtime.GOMAXPROCS(0)
	if n < minSplit || parts <= 1 {
		return part(0, n)
	}
	res := make([]float64, parts)
	var wg sync.WaitGroup
	for k := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[k] = part(k*n/parts, (k+1)*n/parts)
		}()
	}
	wg.Wait()
	var s float64
	for _, r := range res {
		s += r
	}
	return s
}

func sqDiffPart[T float](diff, a, b []T) float64 {
	var s float64
	b = b[:len(a)]
	diff = diff[:len(a)]
	for i, av := range a {
		d := av - b[i]
		diff[i] = d
		s += float64(d) * float64(d)
	}
	return s
}

// sumSq returns Σ x² in float64, split between the cores from minSplit
// elements on (a wide layer's K and V targets).
func sumSq[T float](x []T) float64 {
	return split(len(x), func(lo, hi int) float64 {
		var s float64
		for _, v := range x[lo:hi] {
			s += float64(v) * float64(v)
		}
		return s
	})
}

// gram returns G = Woᵀ·Wo (QD, QD) of the output projection wo (D, QD):
// the metric under which the output term compares attention heads, since
// ‖(Ô − O)·Woᵀ‖² = Σ rows (Ô − O)·G·(Ô − O)ᵀ. It is computed once per graph
// in the element type (never bf16): the symmetric product of BLAS (syrk)
// on the upper triangle, mirrored, so that G is exactly symmetric.
func gram[T float](wo []T, d, qd int) []T {
	g := make([]T, qd*qd)
	switch w := any(wo).(type) {
	case []float32:
		linalg.BLAS().Ssyrk(blas.Upper, blas.Trans, qd, d, 1, w, qd, 0, any(g).([]float32), qd)
	case []float64:
		linalg.BLAS().Dsyrk(blas.Upper, blas.Trans, qd, d, 1, w, qd, 0, any(g).([]float64), qd)
	}
	for i := 0; i < qd; i++ {
		for j := i + 1; j < qd; j++ {
			g[j*qd+i] = g[i*qd+j]
		}
	}
	return g
}

// quadForm sets y = x·G for x (m, n) and a symmetric G (n, n) and returns
// Σ x ⊙ y, the sum over rows of x·G·xᵀ (in float64, split between the
// cores as sqDiff is). G enters as Gᵀ, the layout whose bf16 product is
// the faster one; G = Gᵀ.
func quadForm[T float](y, x, g []T, m, n int) float64 {
	attn.Gemm(false, true, m, n, n, 1, x, n, g, n, 0, y, n)
	return split(m*n, func(lo, hi int) float64 {
		var s float64
		for i, v := range x[lo:hi] {
			s += float64(v) * float64(y[lo+i])
		}
		return s
	})
}

// subtract stores diff = a − b (split between the cores as sqDiff is).
func subtract[T float](diff, a, b []T) {
	split(len(a), func(lo, hi int) float64 {
		for i, v := range a[lo:hi] {
			diff[lo+i] = v - b[lo+i]
		}
		return 0
	})
}

// ropeTable holds, for every position and rotate-half pair i (Hugging Face
// convention), cos and sin of pos·InvFreq[i] times the attention factor of
// the layer's model.Rope, computed as model.NewRopeTable computes them.
type ropeTable[T float] struct {
	tokens, half int
	cos, sin     []T // (T, Dh/2)
}

func newRope[T float](tokens int, rope model.Rope) *ropeTable[T] {
	half := len(rope.InvFreq)
	af := rope.AttentionFactor
	if af == 0 {
		af = 1
	}
	r := &ropeTable[T]{tokens: tokens, half: half, cos: make([]T, tokens*half), sin: make([]T, tokens*half)}
	for i, inv := range rope.InvFreq {
		for p := 0; p < tokens; p++ {
			a := float64(p) * inv
			r.cos[p*half+i] = T(math.Cos(a) * af)
			r.sin[p*half+i] = T(math.Sin(a) * af)
		}
	}
	return r
}

// apply rotates every head of rows [0, rows) of src (rows, width) into dst
// (dst may be src): out[i] = x[i]·cos − x[i+h]·sin, out[i+h] = x[i+h]·cos +
// x[i]·sin, position = row mod T. inverse applies the transpose (the
// backward of apply; the inverse rotation when the attention factor is 1).
func (r *ropeTable[T]) apply(dst, src []T, rows, width int, inverse bool) {
	r.applyScaled(dst, src, rows, width, inverse, 1)
}

// applyScaled is apply with every output then multiplied by scale (the
// same bits as apply followed by a pass of multiplications), the rows split
// between the cores as sqDiff splits its elements.
func (r *ropeTable[T]) applyScaled(dst, src []T, rows, width int, inverse bool, scale T) {
	h := r.half
	split(rows*width, func(lo, hi int) float64 {
		for row := lo / width; row < (hi+width-1)/width && row < rows; row++ {
			if row*width < lo { // the row belongs to the part it starts in
				continue
			}
			p := row % r.tokens
			cs := r.cos[p*h : p*h+h]
			sn := r.sin[p*h : p*h+h]
			s := src[row*width : row*width+width]
			d := dst[row*width : row*width+width]
			for off := 0; off < width; off += 2 * h {
				x1 := s[off : off+h]
				x2 := s[off+h : off+2*h]
				y1 := d[off : off+h]
				y2 := d[off+h : off+2*h]
				for i, c := range cs {
					a, b, sv := x1[i], x2[i], sn[i]
					if inverse {
						sv = -sv
					}
					y1[i] = a*c - b*sv
					y2[i] = b*c + a*sv
				}
				if scale != 1 {
					for i := range y1 {
						y1[i] *= scale
						y2[i] *= scale
					}
				}
			}
		}
		return 0
	})
}

// headNorm is the per-head RMSNorm of the layer's key or query norm
// (model.Attention.KNorm, QNorm): y = x/√(mean x² + eps)·w over each head's
// Dh values, as model.RMSNorm computes it. It keeps 1/rms of every head of
// its last forward for the backward.
type headNorm[T float] struct {
	w    []T // (Dh) effective weights
	eps  float64
	dh   int
	rstd []T // (rows·heads) 1/rms of the last forward
}

func newHeadNorm[T float](w []float32, eps float64) *headNorm[T] {
	if w == nil {
		return nil
	}
	n := &headNorm[T]{w: make([]T, len(w)), eps: eps, dh: len(w)}
	convert(n.w, w)
	return n
}

// forward normalises every head of src into dst (same length, a multiple of
// Dh; dst may be src).
func (n *headNorm[T]) forward(dst, src []T) {
	heads := len(src) / n.dh
	if len(n.rstd) != heads {
		n.rstd = make([]T, heads)
	}
	for h := 0; h < heads; h++ {
		x := src[h*n.dh : (h+1)*n.dh]
		var ss float64
		for _, v := range x {
			ss += float64(v) * float64(v)
		}
		r := T(1 / math.Sqrt(ss/float64(n.dh)+n.eps))
		n.rstd[h] = r
		y := dst[h*n.dh : (h+1)*n.dh]
		for i, v := range x {
			y[i] = v * r * n.w[i]
		}
	}
}

// backward turns dy, the gradient with respect to the last forward's output,
// into the gradient with respect to its input x, in place:
// dx = r·(w⊙dy) − r³·x·Σ(w⊙dy⊙x)/Dh per head.
func (n *headNorm[T]) backward(dy, x []T) {
	for h := range n.rstd {
		g := dy[h*n.dh : (h+1)*n.dh]
		xs := x[h*n.dh : (h+1)*n.dh]
		r := float64(n.rstd[h])
		var dot float64
		for i, v := range g {
			dot += float64(v) * float64(n.w[i]) * float64(xs[i])
		}
		c := r * r * r * dot / float64(n.dh)
		for i, v := range g {
			g[i] = T(r*float64(v)*float64(n.w[i]) - c*float64(xs[i]))
		}
	}
}
