package train

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"

	"github.com/cskv/cskv/linalg"
)

// statsChunkRows is how many rows Stats.Add converts to float64 at a time
// (8 MiB at hidden 4096).
const statsChunkRows = 256

// Stats accumulates calibration statistics of a layer's k/v projection input
// X (n, hidden): the per-channel sum of |x| for ASVD and, optionally, the Gram
// matrix XᵀX for the whitened init. Everything is accumulated in float64.
type Stats struct {
	Hidden int
	N      int64     // rows (tokens) seen
	SumAbs []float64 // (hidden) Σ_t |x_tc|
	Gram   []float64 // (hidden, hidden) XᵀX, both triangles filled; nil unless requested

	chunk []float64 // (statsChunkRows, hidden) scratch
}

// NewStats returns empty statistics for inputs of width hidden; gram selects
// whether XᵀX is accumulated (hidden² float64s: 128 MiB at hidden 4096).
func NewStats(hidden int, gram bool) (*Stats, error) {
	if hidden <= 0 {
		return nil, fmt.Errorf("stats: invalid hidden size %d", hidden)
	}
	s := &Stats{Hidden: hidden, SumAbs: make([]float64, hidden)}
	if gram {
		s.Gram = make([]float64, hidden*hidden)
	}
	return s, nil
}

// Add accumulates the rows of x (n, hidden). On error (bad length, non-finite
// value) the statistics are left unchanged.
func (s *Stats) Add(x []float32 /* (n, hidden) */) error {
	if err := s.addUpper(x); err != nil {
		return err
	}
	s.mirror()
	return nil
}

// mirror fills the lower triangle of Gram from the upper one.
func (s *Stats) mirror() {
	if s.Gram != nil {
		mirrorUpper(s.Gram, s.Hidden)
	}
}

// addUpper is Add accumulating only the upper triangle of Gram: a streaming
// pass calls it per chunk and mirror once at the end. Chunks whose row
// counts are multiples of statsChunkRows give the same bits as one Add of
// all their rows.
func (s *Stats) addUpper(x []float32 /* (n, hidden) */) error {
	h := s.Hidden
	if h <= 0 || len(s.SumAbs) != h || (s.Gram != nil && len(s.Gram) != h*h) {
		return fmt.Errorf("stats: not initialised for hidden %d (use NewStats)", h)
	}
	if len(x)%h != 0 {
		return fmt.Errorf("stats: input has %d values, not a multiple of hidden %d", len(x), h)
	}
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("stats: input row %d channel %d is %v", i/h, i%h, v)
		}
	}
	n := len(x) / h
	if n == 0 {
		return nil
	}
	for t := 0; t < n; t++ {
		row := x[t*h : (t+1)*h]
		for c, v := range row {
			s.SumAbs[c] += math.Abs(float64(v))
		}
	}
	s.N += int64(n)
	if s.Gram == nil {
		return nil
	}
	if len(s.chunk) < statsChunkRows*h {
		s.chunk = make([]float64, statsChunkRows*h)
	}
	impl := linalg.BLAS()
	for t0 := 0; t0 < n; t0 += statsChunkRows {
		rows := min(statsChunkRows, n-t0)
		c := s.chunk[:rows*h] // (rows, hidden)
		for i, v := range x[t0*h : (t0+rows)*h] {
			c[i] = float64(v)
		}
		// Upper triangle of Gram += cᵀ·c.
		impl.Dsyrk(blas.Upper, blas.Trans, h, rows, 1, c, h, 1, s.Gram, h)
	}
	return nil
}

// Merge adds the statistics of o (same hidden size; both with or both without
// Gram) into s.
func (s *Stats) Merge(o *Stats) error {
	if o.Hidden != s.Hidden {
		return fmt.Errorf("stats: merging hidden %d into hidden %d", o.Hidden, s.Hidden)
	}
	if (o.Gram == nil) != (s.Gram == nil) {
		return fmt.Errorf("stats: merging statistics with and without XᵀX")
	}
	if len(o.SumAbs) != len(s.SumAbs) || len(o.Gram) != len(s.Gram) {
		return fmt.Errorf("stats: merging statistics of inconsistent sizes")
	}
	for i, v := range o.SumAbs {
		s.SumAbs[i] += v
	}
	for i, v := range o.Gram {
		s.Gram[i] += v
	}
	s.N += o.N
	return nil
}

// MeanAbs returns mean over rows of |x_c| (hidden), the ASVD statistic; all
// zeros before any row was added.
func (s *Stats) MeanAbs() []float64 {
	out := make([]float64, len(s.SumAbs)) // (hidden)
	if s.N == 0 {
		return out
	}
	inv := 1 / float64(s.N)
	for i, v := range s.SumAbs {
		out[i] = v * inv
	}
	return out
}

// mirrorUpper copies the upper triangle of g (n, n) into its lower triangle.
func mirrorUpper(g []float64, n int) {
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			g[j*n+i] = g[i*n+j]
		}
	}
}

// KVLoss is the mean squared error of the reconstructed projection,
// ‖X·Wᵀ − X·Aᵀ·Bᵀ‖² / (n·kvDim), for x (n, hidden), W (kvDim, hidden),
// A (rank, hidden), B (kvDim, rank). It is computed as ‖X·Δᵀ‖² with
// Δ = W − B·A in float64, in chunks of rows. With A and B nil it returns the
// mean square of X·Wᵀ itself (the denominator of the relative error).
func KVLoss(x []float32 /* (n, hidden) */, W, A, B []float32, hidden, kvDim, rank int) (float64, error) {
	if hidden <= 0 || len(x)%hidden != 0 {
		return 0, fmt.Errorf("kv loss: input has %d values, not a multiple of hidden %d", len(x), hidden)
	}
	n := len(x) / hidden
	if n == 0 {
		return 0, fmt.Errorf("kv loss: no rows")
	}
	delta, err := lossDelta(W, A, B, hidden, kvDim, rank) // (kvDim, hidden)
	if err != nil {
		return 0, fmt.Errorf("kv loss: %w", err)
	}
	chunk := make([]float64, min(n, statsChunkRows)*hidden) // (rows, hidden)
	e := make([]float64, min(n, statsChunkRows)*kvDim)      // (rows, kvDim)
	var sum float64
	for t0 := 0; t0 < n; t0 += statsChunkRows {
		rows := min(statsChunkRows, n-t0)
		for i, v := range x[t0*hidden : (t0+rows)*hidden] {
			chunk[i] = float64(v)
		}
		linalg.Gemm64(false, true, rows, kvDim, hidden, 1, chunk, hidden, delta, hidden, 0, e, kvDim)
		for _, v := range e[:rows*kvDim] {
			sum += v * v
		}
	}
	return sum / (float64(n) * float64(kvDim)), nil
}

// KVLossGram is KVLoss computed from the Gram matrix gram = XᵀX (hidden,
// hidden) of n rows: trace(Δ·XᵀX·Δᵀ) / (n·kvDim) with Δ = W − B·A. With A and B
// nil it returns the mean square of X·Wᵀ.
func KVLossGram(gram []float64 /* (hidden, hidden) */, n int64, W, A, B []float32, hidden, kvDim, rank int) (float64, error) {
	if hidden <= 0 || len(gram) != hidden*hidden {
		return 0, fmt.Errorf("kv loss: XᵀX has %d elements, want %d×%d", len(gram), hidden, hidden)
	}
	if n <= 0 {
		return 0, fmt.Errorf("kv loss: invalid row count %d", n)
	}
	delta, err := lossDelta(W, A, B, hidden, kvDim, rank) // (kvDim, hidden)
	if err != nil {
		return 0, fmt.Errorf("kv loss: %w", err)
	}
	p := make([]float64, kvDim*hidden) // (kvDim, hidden) = Δ·XᵀX
	linalg.Gemm64(false, false, kvDim, hidden, hidden, 1, delta, hidden, gram, hidden, 0, p, hidden)
	var sum float64
	for i, v := range p {
		sum += v * delta[i]
	}
	return sum / (float64(n) * float64(kvDim)), nil
}

// lossDelta returns Δ = W − B·A (kvDim, hidden) in float64, or W when A and B
// are both nil.
func lossDelta(W, A, B []float32, hidden, kvDim, rank int) ([]float64, error) {
	if kvDim <= 0 || len(W) != kvDim*hidden {
		return nil, fmt.Errorf("weight has %d elements, want kv_dim %d × hidden %d", len(W), kvDim, hidden)
	}
	delta := make([]float64, kvDim*hidden) // (kvDim, hidden)
	for i, v := range W {
		delta[i] = float64(v)
	}
	if A == nil && B == nil {
		return delta, nil
	}
	if rank <= 0 || len(A) != rank*hidden || len(B) != kvDim*rank {
		return nil, fmt.Errorf("factors A %d and B %d elements do not match rank %d (A (rank, hidden %d), B (kv_dim %d, rank))", len(A), len(B), rank, hidden, kvDim)
	}
	a := make([]float64, len(A)) // (rank, hidden)
	for i, v := range A {
		a[i] = float64(v)
	}
	b := make([]float64, len(B)) // (kvDim, rank)
	for i, v := range B {
		b[i] = float64(v)
	}
	linalg.Gemm64(false, false, kvDim, hidden, rank, -1, b, rank, a, hidden, 1, delta, hidden)
	return delta, nil
}
