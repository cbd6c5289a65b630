package train

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cskv/cskv/model"
)

// A spilled stream holds what an in-memory one holds, bit for bit, through
// embedding, chunked reads and writes, the streaming pass and advancing;
// its file is unlinked at once.
func TestStreamSpilled(t *testing.T) {
	m, err := model.Synthetic(3)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config
	const nSeq, T = 5, 12
	seqs := make([][]int, nSeq)
	for i := range seqs {
		seqs[i] = make([]int, T)
		for j := range seqs[i] {
			seqs[i][j] = (i*31 + j*7 + 1) % c.Vocab
		}
	}
	dir := t.TempDir()
	mem, err := newStream(m, seqs, "")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := newStream(m, seqs, filepath.Join(dir, "spill.f32"))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if !sp.spilled() || mem.spilled() {
		t.Fatalf("spilled: %v and %v, want true and false", sp.spilled(), mem.spilled())
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the spill file is still linked: %v", left)
	}
	defer func(b int) { scanBytes = b }(scanBytes)
	scanBytes = 4 * c.Hidden * statsChunkRows // chunks of 256 rows: one here
	same := func(what string) {
		t.Helper()
		got := make([]float32, sp.rows()*c.Hidden)
		if err := sp.readFlat(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f32Bytes(got), f32Bytes(mem.h)) {
			t.Fatalf("%s: spilled stream differs from the in-memory one", what)
		}
	}
	same("embedded")
	for l := 0; l < c.Layers; l++ {
		blk, err := m.Block(l)
		if err != nil {
			t.Fatal(err)
		}
		xm, err := mem.attnInput(c, blk)
		if err != nil {
			t.Fatal(err)
		}
		xs, err := sp.attnInput(c, blk)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f32Bytes(xm), f32Bytes(xs)) {
			t.Fatalf("layer %d: attention inputs differ", l)
		}
		seq := make([]float32, T*c.Hidden)
		if err := sp.seqInput(c, blk, seq, 3); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f32Bytes(seq), f32Bytes(xm[3*T*c.Hidden:4*T*c.Hidden])) {
			t.Fatalf("layer %d: sequence 3's input differs", l)
		}
		rows := 0
		if err := sp.scan(c, blk, func(r0 int, v, x []float32) error {
			if !bytes.Equal(f32Bytes(x), f32Bytes(xm[r0*c.Hidden:(r0*c.Hidden+len(x))])) {
				t.Fatalf("layer %d: scan rows from %d differ", l, r0)
			}
			rows += len(v) / c.Hidden
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if rows != nSeq*T {
			t.Fatalf("scan saw %d rows, want %d", rows, nSeq*T)
		}
		if err := mem.advance(c, blk); err != nil {
			t.Fatal(err)
		}
		if err := sp.advance(c, blk); err != nil {
			t.Fatal(err)
		}
		same("advanced")
	}
	if advanceGroup(512) != 8 || advanceGroup(1024) != 4 || advanceGroup(4096) != 1 || advanceGroup(8192) != 1 {
		t.Errorf("advanceGroup: %d %d %d %d, want 8 4 1 1", advanceGroup(512), advanceGroup(1024), advanceGroup(4096), advanceGroup(8192))
	}
	scanBytes = 64 << 20
	if scanRows(4096) != 4096 || scanRows(64) != 262144 || scanRows(1<<20)%statsChunkRows != 0 {
		t.Errorf("scanRows: %d %d %d", scanRows(4096), scanRows(64), scanRows(1<<20))
	}
}

// spillRun runs cfg with the residual streams in memory, or spilled and read
// in chunks of statsChunkRows rows (many per layer), and returns the
// projections' bytes and the layer reports as JSON.
func spillRun(t *testing.T, cfg Config, spill bool) (proj, layers []byte) {
	t.Helper()
	defer func(b int) { scanBytes = b }(scanBytes)
	cfg.StreamMemory = 1 << 40
	if spill {
		cfg.StreamMemory = 1
		scanBytes = 1 // statsChunkRows rows per chunk
	}
	var spilled bool
	res, err := Run(context.Background(), cfg, Env{OnPhase: func(phase string, l int) {
		if phase == "train" {
			spilled = spillFiles(t)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if spilled != spill {
		t.Errorf("spill %v: streams spilled %v", spill, spilled)
	}
	if proj, err = os.ReadFile(res.Projections); err != nil {
		t.Fatal(err)
	}
	for i := range res.Layers {
		res.Layers[i].Seconds = 0
	}
	if layers, err = json.Marshal(res.Layers); err != nil {
		t.Fatal(err)
	}
	return proj, layers
}

// spillFiles reports whether the process has spill files open.
func spillFiles(t *testing.T) bool {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.Contains(target, ".stream-") {
			return true
		}
	}
	return false
}

// Runs with spilled residual streams, read back in many chunks, give the
// same projections bytes and the same reports as runs that hold them in
// memory: the default recipe (whitened init, XᵀX), the reference recipe
// (ASVD, precomputed targets, both terms) and an allocation under a budget.
func TestSpilledRunSameBytes(t *testing.T) {
	for name, edit := range map[string]func(*Config){
		"defaults":  func(*Config) {},
		"reference": func(c *Config) { c.Init, c.LambdaKV, c.OutSeqs = ASVDInit, 1, 2 },
		"budget":    func(c *Config) { c.Budget, c.KDensity, c.VDensity = 0.3, 0.5, 0.5 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := shardConfig(t)
			edit(&cfg)
			cfg.Out = filepath.Join(t.TempDir(), "mem")
			pm, lm := spillRun(t, cfg, false)
			cfg.Out = filepath.Join(t.TempDir(), "spill")
			ps, ls := spillRun(t, cfg, true)
			if !bytes.Equal(pm, ps) {
				t.Error("projections differ between in-memory and spilled streams")
			}
			if !bytes.Equal(lm, ls) {
				t.Errorf("layer reports differ:\n%s\n%s", lm, ls)
			}
		})
	}
}

// A spilled run interrupted mid-layer resumes to the bytes of an
// uninterrupted in-memory run; a sharded run captured and trained with
// spilled streams writes the same stream files and merges into the same
// bytes.
func TestSpilledResumeAndShards(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	cfg := shardConfig(t)
	cfg.Out = filepath.Join(tmp, "single")
	want, _ := spillRun(t, cfg, false)

	defer func(b int) { scanBytes = b }(scanBytes)
	scanBytes = 1
	cfg.Out, cfg.StreamMemory = filepath.Join(tmp, "resumed"), 1
	cctx, cancel := context.WithCancel(ctx)
	steps := 0
	if _, err := Run(cctx, cfg, Env{OnStep: func(s StepInfo) {
		if steps++; steps == 8 { // layer 1, step 3
			cancel()
		}
	}}); err == nil {
		t.Fatal("the interrupted run did not fail")
	}
	cfg.Resume = true
	res, err := Run(ctx, cfg, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(res.Projections); err != nil || !bytes.Equal(got, want) {
		t.Errorf("resumed spilled run: projections differ from the uninterrupted run (%v)", err)
	}

	capture := func(dir string, streamMemory int64) []string {
		c := shardConfig(t)
		c.StreamMemory = streamMemory
		man, err := CaptureShards(ctx, c, 0, []int{0, 2, 5}, dir, Env{})
		if err != nil {
			t.Fatal(err)
		}
		return man.Streams
	}
	dir := filepath.Join(tmp, "sharded")
	if mem, sp := capture(filepath.Join(tmp, "captured-in-memory"), 1<<40), capture(dir, 1); strings.Join(mem, ",") != strings.Join(sp, ",") {
		t.Fatalf("stream files differ: in memory %v, spilled %v", mem, sp)
	}
	for k := 0; k < 2; k++ {
		c, err := ShardConfig(dir, k)
		if err != nil {
			t.Fatal(err)
		}
		c.StreamMemory = 1
		if _, err := Run(ctx, c, Env{}); err != nil {
			t.Fatalf("shard %d: %v", k, err)
		}
	}
	out := filepath.Join(tmp, "merged.safetensors")
	if _, err := Merge(dir, out); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
		t.Errorf("merged spilled shards: projections differ from the single in-memory run (%v)", err)
	}
}
