package checkpoints

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// InvalidSuffix is added to the name of a checkpoint that LoadLatestValid
// passed over, so that List, Latest and Prune no longer see it.
const InvalidSuffix = ".invalid"

// LoadLatestValid loads the newest checkpoint of dir that Load accepts and
// that accept (when not nil: for example, its configuration decodes) accepts,
// walking back from the newest by (layer, step). Every checkpoint passed over
// (also one missing a file) is reported to skip with the reason and, once a
// valid one is found, renamed to <name>.invalid, so that the run's next
// checkpoints are not pruned in favour of it. When none is valid the error
// lists each checkpoint found and why it was refused, and nothing is renamed;
// when dir holds none, the error wraps ErrNoCheckpoint.
func LoadLatestValid(dir string, accept func(path string, st *State) error, skip func(path string, err error)) (string, *State, error) {
	es, err := list(dir, false)
	if err != nil {
		return "", nil, err
	}
	if len(es) == 0 {
		return "", nil, fmt.Errorf("checkpoint dir %s: %w", dir, ErrNoCheckpoint)
	}
	var refused []string
	var passed []string
	for i := len(es) - 1; i >= 0; i-- {
		path := es[i].path
		st, err := Load(path)
		if err == nil && accept != nil {
			err = accept(path, st)
		}
		if err == nil {
			for _, p := range passed {
				if rerr := os.Rename(p, p+InvalidSuffix); rerr != nil {
					return "", nil, fmt.Errorf("moving the invalid checkpoint %s aside: %w", p, rerr)
				}
			}
			return path, st, nil
		}
		if skip != nil {
			skip(path, err)
		}
		passed = append(passed, path)
		refused = append(refused, fmt.Sprintf("%s: %v", filepath.Base(path), err))
	}
	return "", nil, fmt.Errorf("checkpoint dir %s: no valid checkpoint among %d found:\n  %s", dir, len(es), strings.Join(refused, "\n  "))
}
