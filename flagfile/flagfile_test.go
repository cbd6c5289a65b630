package flagfile

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type set struct {
	fs      *flag.FlagSet
	model   *string
	density *float64
	steps   *int
	seed    *uint64
	random  *bool
	ranks   *string
	lr      *float64
}

func newSet() *set {
	fs := flag.NewFlagSet("cskv train", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := &set{fs: fs}
	s.model = fs.String("model", "", "model file")
	s.density = fs.Float64("k-density", 0.25, "key density in (0, 1)")
	s.steps = fs.Int("steps", 100, "Adam steps\nper layer")
	s.seed = fs.Uint64("seed", 1, "seed")
	s.random = fs.Bool("random-chunks", false, "random chunks")
	s.ranks = fs.String("ranks", "", "per-layer ranks")
	s.lr = fs.Float64("lr", 5e-5, "learning rate")
	fs.String("config", "", "config file")
	return s
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCommandLineOverridesFile(t *testing.T) {
	path := writeFile(t, "# a run\nmodel: m.gguf\nk_density: 0.5\nsteps: 7\nrandom-chunks: true\nranks: [4, 8, 8]\nlr: 1e-3\n")
	s := newSet()
	if err := s.fs.Parse([]string{"--steps", "9", "--lr=0.002"}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(s.fs, path, "config"); err != nil {
		t.Fatal(err)
	}
	if *s.model != "m.gguf" || *s.density != 0.5 || *s.steps != 9 || !*s.random || *s.ranks != "4,8,8" || *s.lr != 0.002 || *s.seed != 1 {
		t.Fatalf("model %q density %v steps %d random %v ranks %q lr %v seed %d", *s.model, *s.density, *s.steps, *s.random, *s.ranks, *s.lr, *s.seed)
	}
}

func TestErrorsNameKeyAndLine(t *testing.T) {
	for _, c := range []struct{ content, want string }{
		{"steps: 3\nk-densty: 0.5\n", `line 2: unknown key "k-densty"`},
		{"config: other.yaml\n", `unknown key "config" (not allowed in a config file`},
		{"steps: many\n", `line 1: key "steps": value "many"`},
		{"steps: 3\nsteps: 4\n", `line 2: key "steps" repeats line 1`},
		{"steps: 3\nsteps_x: [1, {a: 2}]\n", "list items must be plain values"},
		{"model:\n", `key "model" has no value`},
		{"seed: {a: 1}\n", "not a mapping"},
		{"- steps\n", "want a mapping"},
		{"steps: [1\n", "run.yaml"},
	} {
		s := newSet()
		s.fs.Parse(nil)
		err := Apply(s.fs, writeFile(t, c.content), "config")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.content, err, c.want)
		}
	}
	s := newSet()
	s.fs.Parse(nil)
	if err := Apply(s.fs, filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	if err := Apply(s.fs, writeFile(t, "")); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

// TestWriteReloads: the written file, applied to a fresh flag set, gives
// every flag the same value, including strings YAML would otherwise read as
// numbers, booleans or null.
func TestWriteReloads(t *testing.T) {
	s := newSet()
	if err := s.fs.Parse([]string{"--model", "true", "--k-density", "0.1", "--steps", "3", "--seed", "18446744073709551615",
		"--random-chunks", "--ranks", "16", "--lr", "1e-07", "--config", ""}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := Write(path, s.fs, nil, "effective configuration\nof a run"); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	text := string(raw)
	for _, want := range []string{"# effective configuration\n", "# key density in (0, 1)\nk-density: 0.1\n", "# Adam steps per layer\nsteps: 3\n", `model: "true"`} {
		if !strings.Contains(text, want) {
			t.Errorf("written file lacks %q:\n%s", want, text)
		}
	}
	back := newSet()
	back.fs.Parse(nil)
	if err := Apply(back.fs, path); err != nil {
		t.Fatalf("reload: %v\n%s", err, text)
	}
	s.fs.VisitAll(func(f *flag.Flag) {
		if g := back.fs.Lookup(f.Name).Value.String(); g != f.Value.String() {
			t.Errorf("flag %s: reloaded %q, wrote %q", f.Name, g, f.Value.String())
		}
	})
	if _, err := Encode(s.fs, []string{"nope"}, ""); err == nil {
		t.Error("Encode of an unknown flag succeeded")
	}
}
