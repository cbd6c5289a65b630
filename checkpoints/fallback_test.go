package checkpoints

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// saveThree writes checkpoints L00-S1, L00-S2, L01-S0 and returns their paths.
func saveThree(t *testing.T, dir string) []string {
	t.Helper()
	var paths []string
	for _, ls := range [][2]int{{0, 1}, {0, 2}, {1, 0}} {
		p, err := Save(dir, sampleState(ls[0], ls[1]))
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func TestLoadLatestValidFallsBack(t *testing.T) {
	dir := t.TempDir()
	paths := saveThree(t, dir)
	// Newest: truncated tensors file; next: state.json removed.
	tf := filepath.Join(paths[2], TensorsFile)
	raw, _ := os.ReadFile(tf)
	if err := os.WriteFile(tf, raw[:len(raw)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(paths[1], StateFile)); err != nil {
		t.Fatal(err)
	}
	var skipped []string
	path, st, err := LoadLatestValid(dir, nil, func(p string, err error) { skipped = append(skipped, filepath.Base(p)+": "+err.Error()) })
	if err != nil {
		t.Fatal(err)
	}
	if path != paths[0] || st.Layer != 0 || st.Step != 1 {
		t.Fatalf("loaded %s (layer %d step %d), want %s", path, st.Layer, st.Step, paths[0])
	}
	requireStateEqual(t, st, sampleState(0, 1))
	if len(skipped) != 2 || !strings.HasPrefix(skipped[0], "ckpt-L01-S000000: ") || !strings.Contains(skipped[0], "corrupt") ||
		!strings.HasPrefix(skipped[1], "ckpt-L00-S000002: ") {
		t.Fatalf("skipped %q", skipped)
	}
	// The invalid ones are moved aside: Latest is now the one loaded.
	if l, _ := Latest(dir); l != paths[0] {
		t.Fatalf("Latest after the fallback: %s", l)
	}
	for _, p := range paths[1:] {
		if _, err := os.Stat(p + InvalidSuffix); err != nil {
			t.Fatalf("%s not moved aside: %v", p, err)
		}
	}
}

func TestLoadLatestValidAcceptAndNone(t *testing.T) {
	dir := t.TempDir()
	paths := saveThree(t, dir)
	refuse := errors.New("configuration unreadable")
	// The caller refuses everything: the error lists each one and why.
	_, _, err := LoadLatestValid(dir, func(string, *State) error { return refuse }, nil)
	if err == nil || !strings.Contains(err.Error(), "no valid checkpoint among 3 found") {
		t.Fatalf("none valid: %v", err)
	}
	for _, p := range paths {
		if !strings.Contains(err.Error(), filepath.Base(p)+": configuration unreadable") {
			t.Errorf("error does not list %s: %v", filepath.Base(p), err)
		}
		if _, serr := os.Stat(p); serr != nil {
			t.Errorf("%s moved although no checkpoint was valid", p)
		}
	}
	// Accept only layer 0: the newest of those is taken.
	path, _, err := LoadLatestValid(dir, func(_ string, st *State) error {
		if st.Layer > 0 {
			return refuse
		}
		return nil
	}, nil)
	if err != nil || path != paths[1] {
		t.Fatalf("accept layer 0: %s, %v", path, err)
	}
	if _, _, err := LoadLatestValid(t.TempDir(), nil, nil); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("empty dir: %v", err)
	}
}

// fullDisk accepts n bytes, then fails every write.
type fullDisk struct {
	f *os.File
	n int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if len(p) > d.n {
		k, _ := d.f.Write(p[:d.n])
		d.n = 0
		return k, errors.New("no space left on device")
	}
	d.n -= len(p)
	return d.f.Write(p)
}

func (d *fullDisk) Close() error { return d.f.Close() }

// TestSaveFailureKeepsPrevious: a write that fails part-way (a full disk,
// injected through createFile) returns the error, leaves no partial
// checkpoint, and the previous checkpoint stays the latest and loadable,
// also when the failing save would have replaced a checkpoint of the same
// name.
func TestSaveFailureKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	prev, err := Save(dir, sampleState(0, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { createFile = func(path string) (io.WriteCloser, error) { return os.Create(path) } }()
	for _, budget := range []int{0, 64, 200} {
		createFile = func(path string) (io.WriteCloser, error) {
			f, err := os.Create(path)
			return &fullDisk{f: f, n: budget}, err
		}
		for _, st := range []*State{sampleState(0, 2), sampleState(0, 1)} {
			if _, err := Save(dir, st); err == nil || !strings.Contains(err.Error(), "no space left") {
				t.Fatalf("budget %d: save error %v", budget, err)
			}
			if l, err := Latest(dir); err != nil || l != prev {
				t.Fatalf("budget %d: latest %s, %v; want %s", budget, l, err, prev)
			}
			got, err := Load(prev)
			if err != nil {
				t.Fatalf("budget %d: previous checkpoint no longer loads: %v", budget, err)
			}
			requireStateEqual(t, got, sampleState(0, 1))
		}
	}
	createFile = func(path string) (io.WriteCloser, error) { return os.Create(path) }
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}
