// Package train initialises and trains the CSKV low-rank K/V factors layer
// by layer with the base model frozen (docs/METHOD.md §2–§4), checkpoints
// the run so that it resumes exactly, and exports the projections file.
//
// # The spine
//
// Run reads top to bottom in this order:
//
//  1. Validate the Config and open the model (OpenModel; "" is the embedded
//     synthetic model).
//  2. Cut the calibration sequences and the held-out ones from the data
//     (package data; sampled from the synthetic model when there is none).
//  3. Resolve the key and value ranks from the densities or explicit ranks
//     (RankFromDensity, docs/METHOD.md §1).
//  4. Open the run directory: start a new run, or resume from its latest
//     checkpoint after checking that the run's problem settings match.
//  5. Embed both sets of sequences into residual streams h (N·T, D) and
//     hHeld (H·T, D): in memory while they fit Config.StreamMemory,
//     otherwise spilled to files in the run directory (stream.go).
//  6. For each layer l:
//     a. capture: one streaming pass over h in chunks of rows computes
//     X = RMSNorm(h), the layer's attention input, accumulates its
//     calibration statistics and, when they fit, the K/V targets; X is
//     never held for all N·T rows (each batch and the held-out sequences
//     compute theirs from the stream);
//     b. initialise the factors (svd, asvd or whiten);
//     c. train: per step draw a batch of sequences, run the graph's
//     forward and backward pass (package graph), check that loss and
//     gradients are finite, take an Adam step, report it (Env.OnStep), and
//     checkpoint every SaveEvery steps;
//     d. measure the held-out losses before and after training, checkpoint
//     the finished layer, report it (Env.OnLayer);
//     e. advance h and hHeld through the original, uncompressed layer.
//  7. Export the projections file and return the Result.
//
// A shard of a run (Config.FirstLayer, Config.LastLayer; shard.go) trains
// only its layer range: with Config.Stream it starts from the residual
// streams CaptureShards stored at its first layer instead of step 5's, and
// it exports nothing (Merge does, from every shard's last checkpoint).
//
// Run never prints: it talks to its caller through Env (a logger and
// callbacks). Capture walks the frozen model the same way (step 6a and 6e)
// for callers that only need the attention inputs.
//
// # Shape legend
//
// Row-major; weights are [out, in], y = x·Wᵀ.
//
//	N       calibration sequences (Config.CalibChunks)
//	H       held-out sequences (Config.Holdout)
//	B       sequences per step (Config.Batch)
//	T       tokens per sequence (Config.SeqLen)
//	D       hidden size
//	KV      key/value width, kv heads · head dim
//	Rk, Rv  key and value ranks
//	Wk, Wv  (KV, D) frozen projections; Ak (Rk, D), Bk (KV, Rk), Av (Rv, D), Bv (KV, Rv) the factors
//	X       (n, D) attention input of a layer, n = N·T (calibration) or H·T (held out)
//	K, V    (n, KV) the targets X·Wkᵀ + bk, X·Wvᵀ + bv
package train
