// Package quant owns the rounding rule of CSKV's quantisation-aware mode
// (docs/METHOD.md §4): asymmetric uniform quantisation of the compressed features
// C = X·Aᵀ with b bits per group, and the bit packing of the resulting codes.
// The same rule serves three places: the straight-through fake-quant op of the
// training graph, evaluation without gorgonia, and the real bi-branch cache
// (package kvcache), and they agree bit for bit.
//
// Shape legend: T tokens (rows), R compressed channels (cols), G group size.
// Matrices are row-major []float32.
//
// # The rule
//
// For a group of numbers with minimum mn and maximum mx and qmax = 2^b − 1:
//
//	s0    = max(mx − mn, 1e-5) / qmax                     (float32)
//	scale = RoundF16(min(s0, 65504))                      (nearest fp16)
//	free zero (default) only:
//	scale = max(scale, RoundF16Up(|mn| / 2048))           (see "Large zero points")
//	scale = max(scale, 2^-14)                             (smallest normal fp16)
//	zero  = −round(mn / scale)                            free (default), |zero| ≤ 2048
//	zero  = clamp(−round(mn / scale), 0, qmax)            ClampZero (the reference code)
//	code  = clamp(round(x / scale) + zero, 0, qmax)       (uint8)
//	x̂     = (code − zero) · scale                         (float32)
//
// round is round-half-to-even (math.RoundToEven), the rule of torch.round.
// All arithmetic is float32 with one rounding per operation, in the order
// written; x/scale is rounded to float32 before round().
//
// Storage precision is part of the rule: the real cache stores scale and zero
// as fp16, so the rule rounds scale to fp16 before zero is computed, and zero
// is an integer of magnitude ≤ 2048, hence exactly representable in fp16.
// Fake quantisation (FakeQuant) and the real cache (Quantize, then Dequantize)
// therefore give bit-identical x̂.
//
// # Degenerate groups
//
//   - Constant group (mx = mn): the range floor 1e-5 applies, then the fp16
//     floor 2^-14 ≈ 6.1e-5 (below it fp16 would go subnormal or to zero); the
//     constant is reproduced to within half a step, usually exactly.
//   - Large zero points: fp16 holds every integer only up to 2048; beyond, a
//     rounded zero would shift all codes of the group by up to 16 steps. In the
//     free mode the scale is therefore raised, when needed, to the smallest fp16
//     ≥ |mn|/2048, which keeps |zero| ≤ 2048 exactly. This only triggers for
//     groups far from zero compared with their spread (|mn| > 2048·(mx−mn)/qmax),
//     and then the quantisation error ≤ scale/2 ≈ |mn|/4096 is of the order of
//     fp16's own rounding of those values. ClampZero never needs it.
//   - Scale overflow: the rule targets values in the fp16 range (|x| ≤ 65504,
//     as the cache itself is fp16). scale is capped at 65504; larger inputs stay
//     finite but clip. Non-finite inputs (NaN, ±Inf) are rejected with an error.
//
// # Straight-through gradient
//
// The mask is 1 where x lies inside the representable range of its group,
// inclusive at both edges, lo ≤ x ≤ hi with lo = (0 − zero)·scale and
// hi = (qmax − zero)·scale computed in float32 exactly as x̂ is (so lo and hi
// are the x̂ of codes 0 and qmax), and 0 elsewhere.
//
// # Grouping
//
//   - PerToken: groups of GroupSize consecutive channels within one row
//     (one head's compressed channels of one token). Group (t, g) covers
//     columns [g·G, (g+1)·G) of row t; groups are numbered t·(R/G) + g.
//   - PerChannel (KIVI keys): one channel across GroupSize consecutive rows.
//     Group (g, c) covers rows [g·G, (g+1)·G) of column c; groups are numbered
//     g·R + c.
//
// Bits 16 means "off": FakeQuant is the identity and Quantize refuses it.
package quant
