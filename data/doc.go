// Package data turns calibration and evaluation sources (text, or token ids)
// into token sequences, deterministically: the perplexity protocol of
// stories260K.json (stories split on "<|endoftext|>" lines, BOS before each,
// concatenated, consecutive chunks of T tokens) and seeded selections of
// those chunks. It knows nothing about model files or gorgonia.
package data
