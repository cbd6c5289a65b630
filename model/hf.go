package model

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/cskv/cskv/model/safetensors"
	"github.com/cskv/cskv/model/tokenizer"
)

// hfSource reads tensors from a Hugging Face safetensors directory.
type hfSource struct{ s *safetensors.Set }

func (s hfSource) read(name string) ([]float32, []int, error) { return s.s.ReadFloat32(name) }
func (s hfSource) has(name string) bool                       { _, ok := s.s.Info(name); return ok }
func (s hfSource) names() map[Role]string                     { return hfNames }
func (s hfSource) close() error                               { return s.s.Close() }
func (s hfSource) list() []TensorEntry {
	var out []TensorEntry
	for _, n := range s.s.Names() {
		ti, _ := s.s.Info(n)
		out = append(out, TensorEntry{Name: n, Shape: ti.Shape, Type: string(ti.DType)})
	}
	return sortedEntries(out)
}

func openHF(dir string) (*Model, error) {
	cfgPath := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", dir, err)
	}
	c, err := parseHFConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("open model %s: config.json: %w", dir, err)
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", dir, err)
	}
	m := &Model{Config: c, Path: dir, Format: "safetensors", src: hfSource{set}, names: families[c.Arch].hfNames, rope: ropeHalves}
	shards, err := shardFiles(dir)
	if err != nil {
		set.Close()
		return nil, fmt.Errorf("open model %s: %w", dir, err)
	}
	files := []string{cfgPath}
	var total int64
	for _, f := range shards {
		files = append(files, f)
		total += fileSize(f)
	}
	if m.Digest, err = digestFiles(files...); err != nil {
		set.Close()
		return nil, err
	}
	m.keepAll = total < keepAllBytes
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err == nil {
		tok, err := tokenizer.LoadHF(dir)
		if err != nil {
			set.Close()
			return nil, fmt.Errorf("open model %s: tokenizer: %w", dir, err)
		}
		m.Tokenizer = tok
	}
	return m, nil
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// shardFiles lists a directory's weight files: model.safetensors, or the
// distinct shards named by model.safetensors.index.json, sorted.
func shardFiles(dir string) ([]string, error) {
	idx := filepath.Join(dir, "model.safetensors.index.json")
	raw, err := os.ReadFile(idx)
	if os.IsNotExist(err) {
		return []string{filepath.Join(dir, "model.safetensors")}, nil
	}
	if err != nil {
		return nil, err
	}
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &index); err != nil {
		return nil, fmt.Errorf("%s: %w", idx, err)
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range index.WeightMap {
		if !seen[f] {
			seen[f] = true
			out = append(out, filepath.Join(dir, f))
		}
	}
	sort.Strings(out)
	return out, nil
}
