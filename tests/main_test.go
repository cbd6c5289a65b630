// Package tests holds black-box and end-to-end tests that cross packages:
// the command line, resume equivalence and the acceptance numbers on the
// real stories260K model. See README.md in this folder.
package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// cskvBin is the command built once for the CLI tests (pure Go, so the
// tests need no OpenBLAS).
var cskvBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cskv-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cskvBin = filepath.Join(dir, "cskv")
	build := exec.Command("go", "build", "-o", cskvBin, "../cmd/cskv")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building cskv:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cskv runs the command and returns its exit code, stdout and stderr.
func cskv(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(cskvBin, args...)
	cmd.Dir = dir
	var out, errb bytesBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running cskv %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}
