package testenv

import (
	"bytes"
	"sync"
)

// LogBuffer is a bytes.Buffer for a logger (or a command's output) that
// many goroutines write while a test reads it. Its methods are safe for
// concurrent use; the zero value is empty and ready.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
