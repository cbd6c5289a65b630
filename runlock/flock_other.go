//go:build !unix

package runlock

import (
	"errors"
	"os"
)

var errWouldBlock = errors.New("would block")

// tryLock: advisory locks need flock, which this platform lacks; refuse
// rather than run unprotected.
func tryLock(f *os.File) error {
	return errors.New("run-directory locking needs a Unix system (flock)")
}

func unlock(f *os.File) error { return nil }
