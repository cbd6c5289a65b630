// Package linalg chooses the BLAS (and LAPACK) backend for the whole program in
// one place: OpenBLAS through cgo when built with the "openblas" tag, gonum's
// pure-Go implementation otherwise. The frozen forward (model), gorgonia (graph)
// and the initialisations (train) all go through it.
//
// Matrices are row-major float32 or float64 slices; shapes are given in
// comments as (rows, cols).
package linalg
