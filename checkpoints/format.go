// Package checkpoints owns cskv's bytes on disk: resumable training state
// (Save, Load, Latest, Prune) and the exported projections file
// (WriteProjections, ReadProjections). It takes plain Go values, so it can be
// tested without gorgonia and its files read back by Python.
//
// A checkpoint is a directory <dir>/ckpt-L<layer>-S<step>/ holding state.json
// (magic, format version, scalar fields, tensor list, checksum) and
// tensors.safetensors (F32, exact bits). It appears atomically: it is written
// as "<name>.tmp", fsynced, then renamed, so a directory with the final name
// is complete (the rename plays the role of llm.c's DONE marker).
package checkpoints

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// Magic identifies a cskv checkpoint's state.json.
const Magic = "cskv-checkpoint"

// FormatVersion is the checkpoint format this package writes and reads. Bump
// it whenever state.json or the tensor layout changes meaning.
const FormatVersion = 1

// ProjectionsFormat and ProjectionsVersion are recorded in the exported
// projections file's __metadata__ as "format" and "format_version".
const (
	ProjectionsFormat  = "cskv-projections"
	ProjectionsVersion = 1
)

// File names inside a checkpoint directory.
const (
	StateFile   = "state.json"
	TensorsFile = "tensors.safetensors"
)

// Suffixes of the directories Save uses while replacing a checkpoint; Latest,
// List and Prune ignore them.
const (
	tmpSuffix = ".tmp"
	oldSuffix = ".old"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrIncompatible: the file is a cskv checkpoint or projections file of
	// another format version.
	ErrIncompatible = errors.New("incompatible format version")
	// ErrCorrupt: a file is missing, truncated, fails its checksum or does
	// not hold what state.json lists.
	ErrCorrupt = errors.New("corrupt checkpoint")
	// ErrNoCheckpoint: the directory holds no complete checkpoint.
	ErrNoCheckpoint = errors.New("no checkpoint")
	// ErrNonFinite: a tensor holds NaN or ±Inf.
	ErrNonFinite = errors.New("non-finite value")
)

// dirPattern matches a complete checkpoint directory name.
var dirPattern = regexp.MustCompile(`^ckpt-L([0-9]{2,})-S([0-9]{6,})$`)

// DirName returns the checkpoint directory name for a layer and step.
func DirName(layer, step int) string { return fmt.Sprintf("ckpt-L%02d-S%06d", layer, step) }

// stateJSON is the schema of state.json, format version 1.
type stateJSON struct {
	Magic         string          `json:"magic"`
	Format        int             `json:"format"`
	Layer         int             `json:"layer"`
	Step          int             `json:"step"`
	NumLayers     int             `json:"num_layers"`
	RNG           []byte          `json:"rng"` // base64
	Cursor        int64           `json:"cursor"`
	ModelDigest   string          `json:"model_digest"`
	Tensors       []string        `json:"tensors"`        // names in the caller's order
	TensorsSHA256 string          `json:"tensors_sha256"` // hex digest of tensors.safetensors
	Config        json.RawMessage `json:"config,omitempty"`
	History       json.RawMessage `json:"history,omitempty"`
}

// versionProbe is decoded first, so that a file of another version reports
// ErrIncompatible rather than a schema error.
type versionProbe struct {
	Magic  string `json:"magic"`
	Format int    `json:"format"`
}
