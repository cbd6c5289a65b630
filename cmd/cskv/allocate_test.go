package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cskv/cskv/alloc"
)

// cskv allocate on the embedded synthetic model writes a plan that fits the
// budget and its figure; a bad budget is a usage error naming the flag.
func TestAllocateSynthetic(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "plan.json")
	args := []string{"--quiet", "--budget", "0.25", "--calib-chunks", "8", "--holdout", "2", "--seq-len", "32", "--out", out}
	if err := runAllocate(context.Background(), newCLI("allocate", ""), args); err != nil {
		t.Fatal(err)
	}
	p, err := alloc.ReadPlan(out)
	if err != nil {
		t.Fatal(err)
	}
	if p.PlanBytes > p.BudgetBytes || len(p.Ranks) != 4 || len(p.Curves) != 8 {
		t.Errorf("plan: %d bytes for a budget of %d, %d layers, %d curves", p.PlanBytes, p.BudgetBytes, len(p.Ranks), len(p.Curves))
	}
	if st, err := os.Stat(filepath.Join(dir, "plan.png")); err != nil || st.Size() == 0 {
		t.Errorf("figure: %v", err)
	}
	err = runAllocate(context.Background(), newCLI("allocate", ""), []string{"--quiet", "--budget", "2", "--out", filepath.Join(dir, "bad.json")})
	if err == nil || !strings.Contains(err.Error(), "--budget") {
		t.Errorf("budget 2: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.json")); err == nil {
		t.Error("a plan was written for a bad budget")
	}
}
