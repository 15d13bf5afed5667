package vm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// TestCPIOListsWithCpio writes an archive and has GNU cpio list it: the
// kernel's initramfs unpacker reads the same newc format.
func TestCPIOListsWithCpio(t *testing.T) {
	cpioBin := testenv.LookPath(t, "cpio", "apt-get install -y cpio")
	var buf bytes.Buffer
	c := newCPIO(&buf)
	c.charDev("/dev/console", 0o600, 5, 1)
	c.file("/init", 0o755, []byte("#!/bin/true\n"))
	c.file("/etc/notifyd-vm/plan.json", 0o644, []byte(`{"packages":[]}`))
	c.file("/odd", 0o644, []byte("abc")) // length not a multiple of 4
	c.symlink("/bin/sh", "busybox")
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d not 4-aligned", buf.Len())
	}
	cmd := exec.Command(cpioBin, "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	list := string(out)
	for _, want := range []string{
		"crw------- ", " 5,   1 ", "dev/console",
		"-rwxr-xr-x", "init",
		"drwxr-xr-x", "etc/notifyd-vm\n",
		"etc/notifyd-vm/plan.json",
		"odd",
		"lrwxrwxrwx", "bin/sh -> busybox",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("cpio listing lacks %q:\n%s", want, list)
		}
	}

	// And the contents come back intact.
	dir := t.TempDir()
	cmd = exec.Command(cpioBin, "-id", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(out), "console") {
		t.Fatalf("cpio -id: %v\n%s", err, out)
	}
	for name, want := range map[string]string{"init": "#!/bin/true\n", "odd": "abc", "etc/notifyd-vm/plan.json": `{"packages":[]}`} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
}
