// Package runlock keeps one process per run directory: an advisory flock on
// DIR/.lock, held from Acquire to Release (or to the process's end, since
// the kernel drops a dead process's flocks). The file holds the holder's PID
// so that a refused process can say who holds the directory; a file left by
// a killed process is not locked and does not block.
package runlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FileName is the lock file inside a run directory.
const FileName = ".lock"

// ErrLocked is wrapped by Acquire's error when another process holds the
// directory.
var ErrLocked = errors.New("run directory in use")

// Lock is a held run-directory lock.
type Lock struct {
	f    *os.File
	path string
}

// Acquire takes the lock of dir (which must exist) without waiting. When
// another process holds it, the error wraps ErrLocked and names the
// directory and the holder's PID.
func Acquire(dir string) (*Lock, error) {
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock run directory %s: %w", dir, err)
	}
	if err := tryLock(f); err != nil {
		holder := "unknown"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = strconv.Itoa(pid)
			}
		}
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("run directory %s is in use by process %s (lock file %s): %w", dir, holder, path, ErrLocked)
		}
		return nil, fmt.Errorf("lock run directory %s: %w", dir, err)
	}
	// The lock is ours: record our PID (replacing a dead holder's).
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt(pid, 0)
		if err != nil {
			unlock(f)
			f.Close()
			return nil, fmt.Errorf("lock run directory %s: %w", dir, err)
		}
	}
	return &Lock{f: f, path: path}, nil
}

// Release drops the lock. The file stays (removing it would let a process
// that opened it just before lock a file nobody else sees). Safe to call on
// nil and more than once.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := unlock(l.f)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}
