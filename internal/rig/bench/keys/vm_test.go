package keysbench_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/vm"
)

// moduleRoot is the directory holding go.mod.
func moduleRoot(b *testing.B) string {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		b.Fatalf("module root: %v", err)
	}
	return root
}

// BenchmarkVMKeyStorm (host only) runs BenchmarkKeyStorm in the VM tier's
// guest (-test.benchtime=2x) and reports its figures as its own, once per
// op. It skips when qemu or the cached VM kernel is missing (outside CI).
func BenchmarkVMKeyStorm(b *testing.B) {
	if testenv.InVM() {
		b.Skip("host side of BenchmarkKeyStorm")
	}
	qemu := testenv.LookPath(b, "qemu-system-x86_64", "apt-get install -y qemu-system-x86")
	root := moduleRoot(b)
	kern := os.Getenv("NOTIFYD_VM_KERNEL")
	if kern == "" {
		out, err := exec.Command(filepath.Join(root, "scripts", "vm-kernel.sh"), "--cached").Output()
		if err != nil {
			testenv.Missing(b, "no VM kernel: "+err.Error(), "./scripts/vm-kernel.sh")
		}
		kern = strings.TrimSpace(string(out))
	}
	metrics := map[string]float64{}
	runs := 0
	for b.Loop() {
		dir := b.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		img, err := vm.BuildImage(ctx, vm.BuildConfig{
			ModuleRoot: root,
			Packages:   []string{"internal/rig/bench/keys"},
			Run:        "^$",
			Args:       []string{"-test.bench=^BenchmarkKeyStorm$", "-test.benchtime=2x"},
			Timeout:    5 * time.Minute,
			Dir:        dir,
		})
		if err != nil {
			cancel()
			b.Fatalf("build initramfs: %v", err)
		}
		for pkg, out := range img.Failed {
			cancel()
			b.Fatalf("%s does not build for the guest:\n%s", pkg, out)
		}
		m, err := vm.Boot(ctx, vm.Config{QEMU: qemu, Kernel: kern, Initrd: img.Path, Dir: dir, CPUs: 2,
			Timeout: img.Plan.Watchdog + 2*time.Minute})
		if err != nil {
			cancel()
			b.Fatalf("boot: %v", err)
		}
		res := m.Wait()
		cancel()
		var out []string
		for _, p := range res.Packages {
			out = append(out, p.Output...)
		}
		for _, l := range out {
			if strings.Contains(l, "storm: received") || strings.Contains(l, "storm: together") || strings.Contains(l, "per storm of") {
				b.Log(strings.TrimSpace(l)) // the guest's per-storm counts
			}
		}
		got := parseBench(out, "BenchmarkKeyStorm")
		if len(got) == 0 {
			b.Fatalf("no BenchmarkKeyStorm result from the guest (done=%v timeout=%v qemu=%v):\n%s",
				res.Done, res.TimedOut, res.QemuErr, strings.Join(out, "\n"))
		}
		for k, v := range got {
			metrics[k] += v
		}
		runs++
	}
	for k, v := range metrics {
		if k != "ns/op" {
			b.ReportMetric(v/float64(runs), k)
		}
	}
}

// parseBench returns the metrics of the result line of benchmark name
// ("BenchmarkX-P  N  v unit  v unit ...") in a test binary's output; a
// line may hold only "N  v unit ..." when the benchmark logged while it
// ran.
func parseBench(lines []string, name string) map[string]float64 {
	pending := false
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if strings.HasPrefix(f[0], name) {
			pending, f = true, f[1:]
		}
		if !pending || len(f) < 3 {
			continue
		}
		if _, err := strconv.Atoi(f[0]); err != nil {
			continue
		}
		m := map[string]float64{}
		for i := 1; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[f[i+1]] = v
			}
		}
		return m
	}
	return nil
}

func TestParseBench(t *testing.T) {
	out := []string{
		"goos: linux",
		"BenchmarkKeyStorm-2   \tsome log line",
		"       2\t 123 ns/op\t  5000 events/s\t 4000 keyctl-events/s",
		"PASS",
	}
	got := parseBench(out, "BenchmarkKeyStorm")
	if got["events/s"] != 5000 || got["keyctl-events/s"] != 4000 || got["ns/op"] != 123 {
		t.Fatalf("parseBench = %v", got)
	}
	if got := parseBench([]string{"BenchmarkKeyStorm-2 --- SKIP"}, "BenchmarkKeyStorm"); got != nil {
		t.Fatalf("parseBench of a skip = %v", got)
	}
}
