// Package testenv decides what a test does when something it needs is
// missing: outside CI it skips with the reason and the command that would
// fix it; in CI (CI=true), where the test command installed everything, it
// fails, so that a missing feature can never pass as a skip.
package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true or CI=1).
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// InVM reports whether the tests run inside notifyd's test VM (the guest
// /init sets NOTIFYD_VM=1), whose kernel has watch_queue and the test
// devices: there nothing may be missing.
func InVM() bool { return os.Getenv("NOTIFYD_VM") == "1" }

// Strict reports whether a missing requirement fails rather than skips.
func Strict() bool { return InCI() || InVM() }

// Missing skips t (outside CI) or fails it (in CI or in the VM) because of
// what, with fix naming the command that provides it.
func Missing(t testing.TB, what, fix string) {
	t.Helper()
	msg := what
	if fix != "" {
		msg += " (fix: " + fix + ")"
	}
	if Strict() {
		t.Fatalf("required in CI: %s", msg)
	}
	t.Skipf("skipped: %s", msg)
}

// Require calls Missing unless err is nil.
func Require(t testing.TB, err error, what, fix string) {
	t.Helper()
	if err != nil {
		Missing(t, what+": "+err.Error(), fix)
	}
}

// LookPath returns the path of the named program or calls Missing.
func LookPath(t testing.TB, name, fix string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, name+" not installed", fix)
	}
	return p
}

// Root calls Missing unless the test runs as root.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: "+why, "run the tests as root (sudo make test)")
	}
}

// KernelFeature is for tests that need a kernel feature the VM kernel has
// and this project's host machines do not (watch_queue, scsi_debug, USB
// hotplug): with err != nil it fails inside the VM, and skips elsewhere,
// CI included, naming the VM tier that runs the same test binary.
func KernelFeature(t testing.TB, err error, what string) {
	t.Helper()
	if err == nil {
		return
	}
	if InVM() {
		t.Fatalf("required in the VM: %s: %v", what, err)
	}
	t.Skipf("skipped on this kernel: %s: %v (the VM tier runs this test: go test ./internal/rig/vmtest)", what, err)
}

// Optional skips t, in CI too, for a capability this kind of machine is
// not expected to have (for example watch_queue on the host kernel, which
// the VM tier covers). Use it only where the requirement is covered
// elsewhere, and say where in why.
func Optional(t testing.TB, why string) {
	t.Helper()
	t.Skipf("skipped: %s", why)
}
