package train

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/cskv/cskv/checkpoints"
	"github.com/cskv/cskv/kv"
)

// doneLayer is one finished layer: its trained factors and its report.
type doneLayer struct {
	Factors kv.Factors
	Info    LayerInfo
}

// layerState is the training state of the layer in progress: everything a
// mid-layer checkpoint holds and a resume restores.
type layerState struct {
	Step    int        // Adam steps done
	Factors kv.Factors // after Step steps
	Adam    *Adam      // moments of the parameters Ak, Bk, Av, Bv (graph.Layer.Params order)
	RNG     *rand.PCG  // the batch sampler
	Info    LayerInfo  // the layer's report so far (curves of the Step steps)
}

// snapshot is what one checkpoint holds: the run's fingerprint, every
// finished layer in order and, mid-layer, the layer in progress. The
// checkpoint is at layer first+len(done), step cur.Step (0 when cur is nil),
// where first is the run's Config.FirstLayer (0 unless a shard).
type snapshot struct {
	fp   fingerprint
	done []doneLayer
	cur  *layerState // nil at a layer boundary
}

// progress is the JSON part of a checkpoint's training state
// (checkpoints.State.History).
type progress struct {
	History []LayerInfo `json:"history"`           // reports of the finished layers
	Partial *LayerInfo  `json:"partial,omitempty"` // report of the layer in progress
	AdamT   int         `json:"adam_t"`
}

// The checkpoint's tensor names, all flat float32 arrays: finished layer l's
// factors are "layers.<l>." + kv.Names ("layers.<l>.Ak" … "layers.<l>.Bv"),
// the layer in progress's "current." + kv.Names, and its Adam moments of
// parameter i (kv.Names order) "adam.m.<i>" and "adam.v.<i>".
func finishedPrefix(l int) string { return fmt.Sprintf("layers.%d.", l) }

const currentPrefix = "current."

func adamNames(i int) (m, v string) { return fmt.Sprintf("adam.m.%d", i), fmt.Sprintf("adam.v.%d", i) }

// encode turns s into a checkpoint state: the fingerprint as Config, the
// layer reports and Adam's step count as History, every factor and moment
// as a tensor.
func (s snapshot) encode() (*checkpoints.State, error) {
	first := s.fp.Config.FirstLayer
	st := &checkpoints.State{Layer: first + len(s.done), NumLayers: s.fp.Layers, ModelDigest: s.fp.ModelDigest}
	var err error
	if st.Config, err = json.Marshal(s.fp); err != nil {
		return nil, err
	}
	var prog progress
	add := func(name string, data []float32) {
		st.Tensors = append(st.Tensors, checkpoints.Tensor{Name: name, Shape: []int{len(data)}, Data: data})
	}
	addFactors := func(prefix string, f kv.Factors) {
		for i, t := range f.Tensors() {
			add(prefix+kv.Names[i], t)
		}
	}
	for l, d := range s.done {
		addFactors(finishedPrefix(first+l), d.Factors)
		prog.History = append(prog.History, d.Info)
	}
	if c := s.cur; c != nil {
		st.Step = c.Step
		addFactors(currentPrefix, c.Factors)
		for i := range c.Adam.M {
			m, v := adamNames(i)
			add(m, c.Adam.M[i])
			add(v, c.Adam.V[i])
		}
		prog.AdamT = c.Adam.T
		partial := c.Info
		prog.Partial = &partial
		if st.RNG, err = c.RNG.MarshalBinary(); err != nil {
			return nil, err
		}
	}
	if st.History, err = json.Marshal(prog); err != nil {
		return nil, err
	}
	return st, nil
}

// decodeSnapshot is encode's inverse for the checkpoint st read from path
// (named in errors).
func decodeSnapshot(st *checkpoints.State, path string) (snapshot, error) {
	var s snapshot
	if err := json.Unmarshal(st.Config, &s.fp); err != nil {
		return s, fmt.Errorf("checkpoint %s: configuration unreadable: %w", path, err)
	}
	if st.NumLayers != s.fp.Layers {
		return s, fmt.Errorf("checkpoint %s: for %d layers, its configuration says %d", path, st.NumLayers, s.fp.Layers)
	}
	var prog progress
	if err := json.Unmarshal(st.History, &prog); err != nil {
		return s, fmt.Errorf("checkpoint %s: progress unreadable: %w", path, err)
	}
	first := s.fp.Config.FirstLayer
	if len(prog.History) != st.Layer-first {
		return s, fmt.Errorf("checkpoint %s: at layer %d with %d layer reports", path, st.Layer, len(prog.History))
	}
	tensors := map[string][]float32{}
	for _, t := range st.Tensors {
		tensors[t.Name] = t.Data
	}
	get := func(name string) ([]float32, error) {
		v, ok := tensors[name]
		if !ok {
			return nil, fmt.Errorf("checkpoint %s lacks tensor %q", path, name)
		}
		return v, nil
	}
	if len(s.fp.KRanks) != s.fp.Layers || len(s.fp.VRanks) != s.fp.Layers {
		return s, fmt.Errorf("checkpoint %s: ranks for %d/%d layers, want %d (a checkpoint of an older cskv?)", path, len(s.fp.KRanks), len(s.fp.VRanks), s.fp.Layers)
	}
	readFactors := func(l int, prefix string) (kv.Factors, error) {
		f := kv.Factors{KRank: s.fp.KRanks[l], VRank: s.fp.VRanks[l]}
		var ts [4][]float32
		var err error
		for i, name := range kv.Names {
			if ts[i], err = get(prefix + name); err != nil {
				return f, err
			}
		}
		f.SetTensors(ts)
		return f, nil
	}
	for i, info := range prog.History {
		f, err := readFactors(first+i, finishedPrefix(first+i))
		if err != nil {
			return s, err
		}
		s.done = append(s.done, doneLayer{Factors: f, Info: info})
	}
	if st.Step == 0 {
		return s, nil
	}
	c := &layerState{Step: st.Step, Adam: NewAdam(nil), RNG: &rand.PCG{}}
	var err error
	if c.Factors, err = readFactors(st.Layer, currentPrefix); err != nil {
		return s, err
	}
	c.Adam.T = prog.AdamT
	for i := range kv.Names {
		mName, vName := adamNames(i)
		m, err := get(mName)
		if err != nil {
			return s, err
		}
		v, err := get(vName)
		if err != nil {
			return s, err
		}
		c.Adam.M, c.Adam.V = append(c.Adam.M, m), append(c.Adam.V, v)
	}
	if err := c.RNG.UnmarshalBinary(st.RNG); err != nil {
		return s, fmt.Errorf("checkpoint %s: rng state: %w", path, err)
	}
	if prog.Partial != nil {
		c.Info = *prog.Partial
	}
	s.cur = c
	return s, nil
}
