package watchqueue

import (
	"runtime"
	"sync"
)

// Key system calls act on the calling thread's credentials: the session
// keyring that KEY_SPEC_SESSION_KEYRING creates or joins is installed in
// one thread only, and Go moves goroutines between threads. So every key
// system call of this package, and every one a caller wants to see the
// same keyrings, runs on one dedicated, locked OS thread.
//
// That thread's goroutine is owned by the package and lives as long as the
// process, like a runtime thread; it holds no other resources.
var keyThread struct {
	once sync.Once
	ch   chan func()
}

// OnKeyThread runs fn on the package's key thread and returns its error.
// Use it for key system calls (add_key, keyctl) whose view of the session
// and thread keyrings must match the watches this package sets.
// fn must not call OnKeyThread.
func OnKeyThread(fn func() error) error {
	keyThread.once.Do(func() {
		keyThread.ch = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread keeps its credentials
			for f := range keyThread.ch {
				f()
			}
		}()
	})
	done := make(chan error, 1)
	keyThread.ch <- func() { done <- fn() }
	return <-done
}
