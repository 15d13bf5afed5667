package lsm

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// startSleeper runs a child that lives until killed and returns it with
// a pidfd of it, which the caller closes.
func startSleeper(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command("sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		testenv.Require(t, err, "pidfd_open", "Linux 5.3 or later")
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, fd
}

// TestExitWatcher: of many watched processes, exactly the ones that exit
// fire, each once; the others stay watched; stop, Close and the watcher's
// own goroutine leave no descriptor behind.
func TestExitWatcher(t *testing.T) {
	before := countFDs(t)
	w := NewExitWatcher()
	const n = 8
	cmds := make([]*exec.Cmd, n)
	fds := make([]int, n)
	fired := make([]chan struct{}, n)
	var calls [n]atomic.Int32
	stops := make([]func(), n)
	var err error
	for i := range cmds {
		cmds[i], fds[i] = startSleeper(t)
		fired[i] = make(chan struct{})
		i := i
		stops[i], err = w.Watch(fds[i], func() {
			if calls[i].Add(1) == 1 {
				close(fired[i])
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if w.Len() != n {
		t.Fatalf("Len %d, want %d", w.Len(), n)
	}
	// The watcher holds duplicates: closing the caller's pidfd changes
	// nothing.
	unix.Close(fds[0])
	fds[0] = -1
	for _, i := range []int{0, 3, 5} {
		cmds[i].Process.Kill()
		cmds[i].Wait()
		<-fired[i]
	}
	stops[1]() // a stopped watch never fires, even when its process exits
	cmds[1].Process.Kill()
	cmds[1].Wait()
	// A process that has already exited fires at once.
	done := make(chan struct{})
	s, err := w.Watch(fds[3], func() { close(done) })
	if err != nil {
		t.Fatal(err)
	}
	<-done
	s()
	// fn may call its own stop.
	cmds[6].Process.Kill()
	cmds[6].Wait()
	self := make(chan struct{})
	var selfStop func()
	ready := make(chan struct{})
	selfStop, err = w.Watch(fds[6], func() { <-ready; selfStop(); close(self) })
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	<-self
	stops[6]()
	stops[0]() // after firing: a no-op
	if got := w.Len(); got != n-5 {
		t.Fatalf("Len %d, want %d (2, 4, 7 live)", got, n-5)
	}
	for _, i := range []int{0, 1, 3, 5, 6} {
		if c := calls[i].Load(); (i == 1 && c != 0) || (i != 1 && c != 1) {
			t.Fatalf("watch %d called %d times", i, c)
		}
	}
	for _, i := range []int{2, 4, 7} {
		if calls[i].Load() != 0 {
			t.Fatalf("watch %d of a live process fired", i)
		}
	}
	// Close ends the live watches without calling them.
	w.Close()
	w.Close()
	stops[2]()
	if _, err := w.Watch(fds[2], func() {}); !errors.Is(err, ErrWatcherClosed) {
		t.Fatalf("Watch after Close: %v", err)
	}
	for _, i := range []int{2, 4, 7} {
		cmds[i].Process.Kill()
		cmds[i].Wait()
		if calls[i].Load() != 0 {
			t.Fatalf("watch %d fired after Close", i)
		}
	}
	for i, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
			fds[i] = -1
		}
	}
	if after := countFDs(t); after != before {
		t.Fatalf("fds: %d before, %d after", before, after)
	}
}

func TestExitWatcherNoPidFD(t *testing.T) {
	w := NewExitWatcher()
	defer w.Close()
	if _, err := w.Watch(-1, func() {}); err == nil {
		t.Fatal("Watch(-1) succeeded")
	}
	// Our own process never exits during the test; stop releases the
	// duplicate, and the last stop the epoll instance.
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		testenv.Require(t, err, "pidfd_open", "Linux 5.3 or later")
	}
	defer unix.Close(fd)
	before, goroutines := countFDs(t), runtime.NumGoroutine()
	for i := 0; i < 20; i++ {
		stop, err := w.Watch(fd, func() { t.Error("exit reported for a live process") })
		if err != nil {
			t.Fatal(err)
		}
		stop()
		stop()
	}
	if after := countFDs(t); after != before {
		t.Fatalf("fds: %d before, %d after", before, after)
	}
	// With nothing watched the goroutine returns by itself (it was told
	// by closing its epoll descriptor, and is not waited for by stop).
	for runtime.NumGoroutine() > goroutines {
		time.Sleep(time.Millisecond)
	}
}
