package testenv

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that a process or logger writes to while the
// test reads it. Its zero value is ready to use; it must not be copied
// after first use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
