package tests

import (
	"bytes"
	"sync"
)

// bytesBuffer is a bytes.Buffer safe for concurrent writes.
type bytesBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *bytesBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *bytesBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
