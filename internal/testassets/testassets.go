// Package testassets locates the real test assets (models, text, goldens) that live
// in the shared folder beside the repository (../shared), never inside it.
//
// Tests call Path; when an asset is missing the test is skipped with a reason,
// unless CSKV_REQUIRE_ASSETS=1 (set by .ci/run), in which case it fails.
package testassets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// EnvDir overrides the location of the shared folder.
const EnvDir = "CSKV_SHARED"

// EnvRequire, when "1", turns a missing asset into a test failure.
const EnvRequire = "CSKV_REQUIRE_ASSETS"

// Dir returns the shared folder: $CSKV_SHARED, or the first "shared" folder
// found beside the working directory or one of its parents.
func Dir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		cand := filepath.Join(filepath.Dir(d), "shared")
		if st, err := os.Stat(filepath.Join(cand, "models")); err == nil && st.IsDir() {
			return cand, nil
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	return "", errors.New("shared assets folder not found (set CSKV_SHARED)")
}

// Find returns the absolute path of rel inside the shared folder.
func Find(rel string) (string, error) {
	d, err := Dir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(d, rel)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("asset %s: %w", rel, err)
	}
	return p, nil
}

// Path returns the path of a shared asset for a test, skipping (or failing,
// when CSKV_REQUIRE_ASSETS=1) if it is absent.
func Path(t testing.TB, rel string) string {
	t.Helper()
	p, err := Find(rel)
	if err != nil {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("required asset missing: %v", err)
		}
		t.Skipf("asset missing: %v", err)
	}
	return p
}
