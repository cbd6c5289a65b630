package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The file names of a Hugging Face model directory.
const (
	SingleFileName = "model.safetensors"
	IndexFileName  = "model.safetensors.index.json"
)

// Set is the tensors of a Hugging Face model directory: one model.safetensors
// file, or shards listed by model.safetensors.index.json. It offers the read
// API of File across all shards and is safe for concurrent reads.
type Set struct {
	dir    string
	shards []*File           // sorted by file name
	where  map[string]*File  // tensor name → shard holding it
	names  []string          // sorted
	meta   map[string]string // merged __metadata__ of the shards
}

// index is the schema of model.safetensors.index.json. Its "metadata" holds
// non-string values (total_size) and is not used.
type index struct {
	WeightMap map[string]string `json:"weight_map"`
}

// OpenDir opens the safetensors weights of a model directory. Like
// transformers it prefers model.safetensors and falls back to the sharded
// index; with the index, every shard it names must exist and hold the tensors
// mapped to it.
func OpenDir(dir string) (*Set, error) {
	single := filepath.Join(dir, SingleFileName)
	if _, err := os.Stat(single); err == nil {
		f, err := Open(single)
		if err != nil {
			return nil, err
		}
		s := &Set{dir: dir, shards: []*File{f}, where: map[string]*File{}, names: f.Names(), meta: f.Metadata()}
		for _, n := range s.names {
			s.where[n] = f
		}
		return s, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("safetensors dir %s: %w", dir, err)
	}

	idxPath := filepath.Join(dir, IndexFileName)
	b, err := os.ReadFile(idxPath)
	if errors.Is(err, fs.ErrNotExist) {
		if st, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("safetensors dir: %w", serr)
		} else if !st.IsDir() {
			return nil, fmt.Errorf("safetensors dir %s: not a directory", dir)
		}
		return nil, fmt.Errorf("safetensors dir %s: neither %s nor %s found", dir, SingleFileName, IndexFileName)
	}
	if err != nil {
		return nil, fmt.Errorf("safetensors dir %s: %w", dir, err)
	}
	var idx index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("safetensors index %s: %w: %v", idxPath, ErrFormat, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("safetensors index %s: %w: empty or missing weight_map", idxPath, ErrFormat)
	}
	byShard := map[string][]string{}
	for tensor, shard := range idx.WeightMap {
		if shard == "" || shard == "." || shard == ".." || strings.ContainsAny(shard, `/\`) {
			return nil, fmt.Errorf("safetensors index %s: %w: tensor %q: shard %q is not a plain file name",
				idxPath, ErrFormat, tensor, shard)
		}
		byShard[shard] = append(byShard[shard], tensor)
	}

	s := &Set{dir: dir, where: make(map[string]*File, len(idx.WeightMap))}
	for _, shard := range slices.Sorted(maps.Keys(byShard)) {
		f, err := Open(filepath.Join(dir, shard))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("safetensors index %s: shard %q: %w", idxPath, shard, err)
		}
		s.shards = append(s.shards, f)
		tensors := byShard[shard]
		slices.Sort(tensors)
		for _, t := range tensors {
			if _, ok := f.Info(t); !ok {
				s.Close()
				return nil, fmt.Errorf("safetensors index %s: tensor %q: not in its shard %s", idxPath, t, shard)
			}
			s.where[t] = f
		}
		for k, v := range f.hdr.Metadata {
			if s.meta == nil {
				s.meta = map[string]string{}
			}
			if _, ok := s.meta[k]; !ok {
				s.meta[k] = v
			}
		}
	}
	s.names = slices.Sorted(maps.Keys(s.where))
	return s, nil
}

// Dir returns the directory the set was opened from.
func (s *Set) Dir() string { return s.dir }

// Names returns all tensor names in sorted order.
func (s *Set) Names() []string { return slices.Clone(s.names) }

// Info returns the location of a tensor; Begin and End are relative to the
// data section of the shard named by File.
func (s *Set) Info(name string) (TensorInfo, bool) {
	f, ok := s.where[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Info(name)
}

// File returns the shard holding a tensor.
func (s *Set) File(name string) (*File, bool) {
	f, ok := s.where[name]
	return f, ok
}

// ReadFloat32 reads a tensor from its shard as float32, with its shape.
func (s *Set) ReadFloat32(name string) ([]float32, []int, error) {
	f, ok := s.where[name]
	if !ok {
		return nil, nil, fmt.Errorf("safetensors dir %s: no tensor %q", s.dir, name)
	}
	return f.ReadFloat32(name)
}

// Metadata returns the __metadata__ of the shards merged (for a key present in
// several shards, the first shard by file name wins); nil when none has any.
func (s *Set) Metadata() map[string]string { return maps.Clone(s.meta) }

// Close closes every shard and returns the first error.
func (s *Set) Close() error {
	var first error
	for _, f := range s.shards {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	s.shards = nil
	return first
}
