package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// RecordedConfig is the configuration a run directory records in run.json,
// so that `cskv train --resume --out DIR` needs no other flag. Out, Resume,
// Force and Export are not part of it (they are zero).
func RecordedConfig(dir string) (Config, error) {
	path := filepath.Join(dir, runFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("--resume %s: not a cskv run directory (%w)", dir, err)
	}
	var rec struct {
		Config *Config `json:"config"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil || rec.Config == nil {
		if err == nil {
			err = fmt.Errorf("no config")
		}
		return Config{}, fmt.Errorf("--resume: %s: recorded configuration unreadable: %v", path, err)
	}
	return *rec.Config, nil
}
