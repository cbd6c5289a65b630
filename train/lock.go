package train

import (
	"fmt"
	"os"

	"github.com/cskv/cskv/runlock"
)

// lockRun takes the run directory's lock for the whole run (runlock: one
// process per directory; a second one gets an error naming the directory
// and the holder's PID). It creates the directory for a new run. The
// returned function releases the lock.
func lockRun(cfg Config) (release func(), err error) {
	if cfg.Out == "" {
		return func() {}, nil
	}
	if cfg.Resume {
		if _, err := os.Stat(cfg.Out); err != nil {
			return nil, fmt.Errorf("--resume %s: not a cskv run directory (%w)", cfg.Out, err)
		}
	} else if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("--out %s: %w", cfg.Out, err)
	}
	l, err := runlock.Acquire(cfg.Out)
	if err != nil {
		return nil, err
	}
	return func() { l.Release() }, nil
}
