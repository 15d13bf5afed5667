package testenv

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// leakGrace is how long MainNoLeaks waits for goroutines to end.
var leakGrace = 10 * time.Second

// MainNoLeaks runs the tests and then fails the binary if goroutines
// started by them are still running (every goroutine must be owned and
// stopped), after a grace period for servers still winding down. Call it
// from TestMain.
func MainNoLeaks(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 && !fuzzing() {
		deadline := time.Now().Add(leakGrace)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			fmt.Fprintf(os.Stderr, "goroutine leak: %d goroutines after the tests, %d before\n%s\n", n, before, strings.TrimSpace(string(buf)))
			code = 1
		}
	}
	os.Exit(code)
}

// fuzzing reports whether the binary runs as a fuzz coordinator or worker,
// whose own goroutines outlive the tests.
func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}
