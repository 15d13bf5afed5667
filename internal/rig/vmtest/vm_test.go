package vmtest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/vm"
)

// Packages are the packages whose whole test binaries run in the guest,
// in this order. Packages that do not exist (yet) or have no tests are
// left out and logged.
var Packages = []string{
	"watchqueue",
	"sources/keys",
	"sources/block",
	"sources/usb",
	"sources/uevent",
	"sources/kmsg",
	// the /proc/self/mountinfo fallback on a kernel without fanotify
	// mount notifications or statmount; the fanotify and statmount tests
	// are host-tier (6.18)
	"sources/mount:^TestIntegration(SequenceMountinfo|Snapshot|Storm|Health)$",
	"internal/rig/vm/scenarios",
	// notifyctl watch-key on a real watch_queue kernel; ctl's other tests
	// are host-tier (they create users, start servers).
	"ctl:^TestIntegrationWatchKeyKernel$",
	// guest.KeyWatch, the key storm benchmark's same-size peer for
	// keyctl watch, on a real notification pipe.
	"internal/rig/vm/guest:^TestKeyWatch",
}

var (
	flagPkg     = flag.String("vm.pkg", "", "comma-separated `packages` to run in the guest (default: all of vmtest.Packages)")
	flagRun     = flag.String("vm.run", "", "`regexp` passed as -test.run to the guest test binaries")
	flagTimeout = flag.Duration("vm.timeout", 4*time.Minute, "per-package test timeout in the guest")
	flagDog     = flag.Duration("vm.watchdog", 0, "guest /init watchdog: dump goroutines and power off after this long (default: package timeouts + 1m)")
	flagGolden  = flag.Bool("vm.update-golden", false, "write golden captures from the guest to record/testdata/kernel-6.1/")
	flagKeep    = flag.String("vm.dir", "", "keep the run's files (console, transcript, kmsg, initramfs) in this `directory`")
	flagAppend  = flag.String("vm.append", "", "extra guest kernel command line `words`, e.g. loglevel=7 (the console goes to console.txt)")
	flagStream  = flag.Bool("vm.stream", false, "print the guest's output as it arrives")
)

const (
	qemuFix   = "apt-get install -y qemu-system-x86"
	kernelFix = "apt-get install -y linux-source-6.1 bc flex bison libelf-dev libssl-dev cpio && ./scripts/vm-kernel.sh"
)

func moduleRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return root
}

// kernel returns the VM kernel: NOTIFYD_VM_KERNEL, else the cached build
// from scripts/vm-kernel.sh. In CI (strict) a cold cache is built here;
// elsewhere the test skips and names the command.
func kernel(t *testing.T, root string) string {
	t.Helper()
	if k := os.Getenv("NOTIFYD_VM_KERNEL"); k != "" {
		if _, err := os.Stat(k); err != nil {
			testenv.Missing(t, "NOTIFYD_VM_KERNEL="+k+": "+err.Error(), "unset it, or ./scripts/vm-kernel.sh")
		}
		return k
	}
	script := filepath.Join(root, "scripts", "vm-kernel.sh")
	args := []string{"--cached"}
	if testenv.InCI() {
		args = nil // build it: 12-16 min on 2 cores when the cache is cold
	}
	start := time.Now()
	cmd := exec.Command(script, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("vm-kernel.sh %s: %v\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), strings.TrimSpace(stderr.String()))
	if err != nil {
		testenv.Missing(t, "no VM kernel ("+err.Error()+": "+strings.TrimSpace(stderr.String())+")", kernelFix)
	}
	return strings.TrimSpace(string(out))
}

// TestIntegrationVM builds the guest initramfs from the packages' test
// binaries, boots it under qemu with the watch_queue kernel, and reports
// every guest package as a subtest and every guest top-level test as a
// subtest of that.
func TestIntegrationVM(t *testing.T) {
	qemu := testenv.LookPath(t, "qemu-system-x86_64", qemuFix)
	root := moduleRoot(t)
	kern := kernel(t, root)

	pkgs := Packages
	if *flagPkg != "" {
		pkgs = strings.Split(*flagPkg, ",")
	}
	dir := *flagKeep
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("run directory: %s", dir)

	ctx := t.Context()
	img, err := vm.BuildImage(ctx, vm.BuildConfig{
		ModuleRoot: root,
		Packages:   pkgs,
		Run:        *flagRun,
		Timeout:    *flagTimeout,
		Watchdog:   *flagDog,
		Dir:        dir,
	})
	if err != nil {
		t.Fatalf("build initramfs: %v", err)
	}
	t.Logf("initramfs: %d packages, %.1f MiB, built in %v", len(img.Plan.Packages), float64(img.Size)/(1<<20), img.Duration.Round(time.Millisecond))
	if len(img.Missing) > 0 {
		t.Logf("not run in the guest (no such package or no tests yet): %s", strings.Join(img.Missing, ", "))
	}
	for pkg, out := range img.Failed {
		t.Run(pkg, func(t *testing.T) { t.Errorf("test binary does not build:\n%s", out) })
	}
	if len(img.Plan.Packages) == 0 {
		t.Fatalf("nothing to run in the guest")
	}

	golden := ""
	if *flagGolden {
		golden = filepath.Join(root, "record", "testdata", "kernel-6.1")
	}
	var onLine func(string)
	if *flagStream {
		onLine = func(l string) { fmt.Fprintln(os.Stderr, l) }
	}
	m, err := vm.Boot(ctx, vm.Config{
		QEMU:      qemu,
		Kernel:    kern,
		Initrd:    img.Path,
		Dir:       dir,
		Timeout:   img.Plan.Watchdog + 2*time.Minute,
		GoldenDir: golden,
		OnLine:    onLine,
		Append:    strings.Fields(*flagAppend),
	})
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	res := m.Wait()
	t.Logf("timings: boot to /init %v (guest uptime %ss), whole run %v (guest /init %ss), initramfs build %v",
		res.BootToInit.Round(time.Millisecond), res.GuestUptime, res.Total.Round(time.Millisecond), res.InitSeconds, img.Duration.Round(time.Millisecond))
	for name := range res.Golden {
		t.Logf("golden capture %s -> %s", name, filepath.Join(dir, "golden", name))
	}

	ran := map[string]*vm.PackageResult{}
	for _, p := range res.Packages {
		ran[p.Path] = p
	}
	for _, p := range img.Plan.Packages {
		pr := ran[p.Path]
		t.Run(p.Path, func(t *testing.T) { reportPackage(t, pr, res) })
	}
	if !res.Done || res.TimedOut || res.GuestFails < 0 {
		t.Errorf("guest did not finish (done=%v, guest watchdog=%v, host timeout=%v, qemu: %v)\n/init: %s\n%s\nconsole tail:\n%s",
			res.Done, res.GuestFails < 0, res.TimedOut, res.QemuErr, strings.Join(res.Logs, "\n"), strings.Join(res.Stacks, "\n"), consoleTail(dir, 40))
	} else if res.QemuErr != nil {
		t.Errorf("qemu: %v", res.QemuErr)
	}
}

func reportPackage(t *testing.T, pr *vm.PackageResult, res *vm.Result) {
	if pr == nil {
		t.Fatalf("the guest never started this package\n/init: %s\nconsole tail:\n%s", strings.Join(res.Logs, "\n"), consoleTail(res.Dir, 40))
	}
	t.Logf("guest: %.2fs, exit %d (%s)", pr.Seconds, pr.Exit, pr.Reason)
	tests, rest := vm.ParseTestOutput(pr.Output)
	failed := false
	for _, tc := range tests {
		t.Run(tc.Name, func(t *testing.T) {
			out := strings.Join(tc.Output, "\n")
			switch tc.Outcome {
			case "PASS":
			case "SKIP":
				// The guest is strict (testenv.InVM): a guest test
				// skips only through a raw t.Skip or testenv.Optional.
				// Mirror it through testenv, so that CI fails on it.
				testenv.Missing(t, "skipped in the guest:\n"+out, "")
			case "FAIL":
				failed = true
				t.Errorf("failed in the guest:\n%s", out)
			default:
				failed = true
				t.Errorf("did not finish in the guest (%s):\n%s\nkernel log tail:\n%s", pr.Reason, out, tail(res.Kmsg, 30))
			}
		})
	}
	if !pr.Ended {
		t.Errorf("the guest never finished this package:\n%s", tail(pr.Output, 60))
	} else if pr.Exit != 0 && !failed {
		t.Errorf("test binary exit %d (%s):\n%s", pr.Exit, pr.Reason, strings.Join(rest, "\n"))
	}
}

func tail(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func consoleTail(dir string, n int) string {
	b, err := os.ReadFile(filepath.Join(dir, "console.txt"))
	if err != nil {
		return err.Error()
	}
	return tail(strings.Split(strings.TrimRight(string(b), "\n"), "\n"), n)
}
