// Package mountns runs a test in a private mount namespace of its own, so
// that the mounts it makes (and the mount events it expects) touch
// nothing else on the machine and nothing else disturbs them.
//
// The test binary runs itself again, for that one test, in a child made
// with CLONE_NEWNS (Go then makes every mount of the child's namespace
// private, so nothing propagates back). The child's output is the
// parent's log; its failure is the parent's failure, its skip the
// parent's skip.
package mountns

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

const envChild = "NOTIFYD_MOUNTNS_TEST"

// Enter reports whether the caller runs in the private namespace. In the
// first process it runs the test's child, reports its result and returns
// false: the test must then return. t must be a top-level test.
func Enter(t *testing.T) bool {
	t.Helper()
	if os.Getenv(envChild) == t.Name() {
		return true
	}
	testenv.Root(t, "makes a mount namespace and mounts in it")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envChild+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := out.String()
	t.Log("in a private mount namespace:\n" + text)
	if err != nil {
		t.Fatalf("test in a private mount namespace: %v", err)
	}
	if m := regexp.MustCompile(`--- SKIP: ` + regexp.QuoteMeta(t.Name()) + ` .*\n((?:\s+.*\n)*)`).FindStringSubmatch(text); m != nil {
		t.Skip(strings.TrimSpace(m[1]))
	}
	return false
}
