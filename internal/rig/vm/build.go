package vm

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/internal/rig/vm/proto"
)

// BuildConfig says what goes into the guest initramfs.
type BuildConfig struct {
	// ModuleRoot is the directory holding go.mod.
	ModuleRoot string
	// Packages are module-relative package paths whose test binaries run
	// in the guest, in this order. An entry "pkg:REGEXP" runs only that
	// package's tests matching REGEXP (for packages whose other tests
	// belong to the host tier). Packages that do not exist or have no
	// test files are left out and reported in Image.Missing.
	Packages []string
	// Run and Args are passed to every test binary (-test.run=Run, Args...).
	Run  string
	Args []string
	// Timeout is each test binary's -test.timeout (default 3m).
	Timeout time.Duration
	// Watchdog bounds the whole guest run (default: sum of timeouts + 1m).
	Watchdog time.Duration
	// Keyctl is the host's keyutils keyctl to carry into the guest with its
	// shared libraries; empty means look it up on PATH, "-" means none.
	Keyctl string
	// Env is added to every test binary's environment in the guest.
	Env []string
	// Dir is where the binaries and the initramfs are written.
	Dir string
	// Go is the go command (default: "go" on PATH, else /usr/local/go/bin/go).
	Go string
}

// Image is a built initramfs.
type Image struct {
	Path     string
	Size     int64
	Plan     proto.Plan
	Missing  []string          // packages left out: no such package or no tests
	Failed   map[string]string // packages whose test binary did not build: go's output
	Duration time.Duration
}

// BuildImage compiles /init and the test binaries with CGO_ENABLED=0 and
// packs them, the packages' testdata, and keyctl with its libraries into
// an uncompressed newc initramfs (uncompressed: no decompression under TCG).
func BuildImage(ctx context.Context, cfg BuildConfig) (*Image, error) {
	start := time.Now()
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Minute
	}
	if cfg.Go == "" {
		cfg.Go = GoCommand()
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "bin"), 0o755); err != nil {
		return nil, err
	}
	img := &Image{Path: filepath.Join(cfg.Dir, "initramfs.cpio"), Failed: map[string]string{}}

	initBin := filepath.Join(cfg.Dir, "bin", "init")
	if out, err := goCmd(ctx, cfg, "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, "./internal/rig/vm/vminit"); err != nil {
		return nil, fmt.Errorf("build guest init: %w\n%s", err, out)
	}

	var (
		mu   sync.Mutex
		bins = map[string]string{}
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 2)
	)
	for _, entry := range cfg.Packages {
		pkg, _, _ := strings.Cut(entry, ":")
		ok, err := hasTests(filepath.Join(cfg.ModuleRoot, pkg))
		if err != nil || !ok {
			img.Missing = append(img.Missing, pkg)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			bin := filepath.Join(cfg.Dir, "bin", strings.ReplaceAll(pkg, "/", "_")+".test")
			os.Remove(bin)
			out, err := goCmd(ctx, cfg, "test", "-c", "-trimpath", "-o", bin, "./"+pkg)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				img.Failed[pkg] = fmt.Sprintf("%v\n%s", err, out)
				return
			}
			if _, err := os.Stat(bin); err != nil { // "no test files"
				img.Missing = append(img.Missing, pkg)
				return
			}
			bins[pkg] = bin
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	plan := proto.Plan{Watchdog: cfg.Watchdog, Env: cfg.Env}
	for _, entry := range cfg.Packages {
		pkg, run, _ := strings.Cut(entry, ":")
		if bins[pkg] == "" {
			continue
		}
		args := append([]string(nil), cfg.Args...)
		if cfg.Run != "" {
			run = cfg.Run
		}
		if run != "" {
			args = append(args, "-test.run="+run)
		}
		plan.Packages = append(plan.Packages, proto.Package{
			Path:    pkg,
			Binary:  path.Join(proto.TestsDir, strings.ReplaceAll(pkg, "/", "_")+".test"),
			Args:    args,
			Timeout: cfg.Timeout,
		})
	}
	if plan.Watchdog <= 0 {
		plan.Watchdog = time.Duration(len(plan.Packages))*cfg.Timeout + time.Minute
	}
	img.Plan = plan

	f, err := os.Create(img.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	c := newCPIO(bw)
	for _, d := range []string{"/dev", "/proc", "/sys", "/tmp", "/run", "/root", "/bin", proto.TestsDir, proto.SrcDir} {
		c.mkdirAll(d)
	}
	// The kernel opens /dev/console for init's stdio before /init can
	// mount devtmpfs.
	c.charDev("/dev/console", 0o600, 5, 1)
	if err := c.copyFile("/init", initBin); err != nil {
		return nil, err
	}
	planJSON, err := json.MarshalIndent(plan, "", "  ")
	if err != nil {
		return nil, err
	}
	c.file(proto.PlanPath, 0o644, planJSON)
	for _, p := range plan.Packages {
		if err := c.copyFile(p.Binary, bins[p.Path]); err != nil {
			return nil, err
		}
		if err := addTestdata(c, cfg.ModuleRoot, p.Path); err != nil {
			return nil, err
		}
	}
	if cfg.Keyctl != "-" {
		kc := cfg.Keyctl
		if kc == "" {
			kc, _ = exec.LookPath("keyctl")
		}
		if kc != "" {
			if err := addDynamic(c, "/bin/keyctl", kc); err != nil {
				return nil, fmt.Errorf("add keyctl: %w", err)
			}
		}
	}
	if err := c.close(); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	img.Size = fi.Size()
	img.Duration = time.Since(start)
	return img, nil
}

// GoCommand returns the go command to build with.
func GoCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

func goCmd(ctx context.Context, cfg BuildConfig, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, cfg.Go, args...)
	cmd.Dir = cfg.ModuleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	return cmd.CombinedOutput()
}

// hasTests reports whether dir holds a Go package with _test.go files.
func hasTests(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), "_test.go") {
			return true, nil
		}
	}
	return false, nil
}

// addTestdata copies the package's testdata directory, so tests find it
// relative to their working directory as under go test.
func addTestdata(c *cpioWriter, root, pkg string) error {
	src := filepath.Join(root, pkg, "testdata")
	if _, err := os.Stat(src); err != nil {
		return nil
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := path.Join(proto.SrcDir, pkg, "testdata", filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			c.mkdirAll(dst)
		case d.Type().IsRegular():
			return c.copyFile(dst, p)
		}
		return nil
	})
}

// addDynamic adds an ELF program as name together with its interpreter and
// the shared libraries it needs (transitively), at the same paths as on
// the host.
func addDynamic(c *cpioWriter, name, src string) error {
	if err := c.copyFile(name, src); err != nil {
		return err
	}
	seen := map[string]bool{}
	var add func(string) error
	add = func(file string) error {
		f, err := elf.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return err
			}
			interp := string(bytes.TrimRight(b, "\x00"))
			if !seen[interp] {
				seen[interp] = true
				if err := c.copyFile(interp, interp); err != nil {
					return err
				}
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return err
		}
		for _, lib := range libs {
			p, err := findLib(lib)
			if err != nil {
				return err
			}
			if seen[p] {
				continue
			}
			seen[p] = true
			if err := c.copyFile(p, p); err != nil {
				return err
			}
			if err := add(p); err != nil {
				return err
			}
		}
		return nil
	}
	return add(src)
}

var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

func findLib(name string) (string, error) {
	for _, d := range libDirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("shared library " + name + " not found")
}
