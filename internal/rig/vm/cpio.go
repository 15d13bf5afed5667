package vm

import (
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// cpioWriter writes an uncompressed "newc" cpio archive, the format the
// kernel unpacks as initramfs. Device nodes are just headers, so building
// one needs no root and no mknod.
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	n    int64
	dirs map[string]bool
	err  error
}

func newCPIO(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1, dirs: map[string]bool{".": true, "/": true, "": true}}
}

const (
	cpioDir  = 0o040000
	cpioReg  = 0o100000
	cpioLink = 0o120000
	cpioChr  = 0o020000
)

// header writes one entry header; major and minor are the node's rdev.
func (c *cpioWriter) header(name string, mode uint32, size int, major, minor uint32) {
	if c.err != nil {
		return
	}
	name = strings.TrimPrefix(name, "/")
	c.ino++
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, major, minor, len(name)+1, 0)
	c.write([]byte(h))
	c.write([]byte(name + "\x00"))
	c.pad()
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// mkdirAll adds name's missing parent directories and name itself.
func (c *cpioWriter) mkdirAll(name string) {
	name = path.Clean("/" + name)
	if c.dirs[name] {
		return
	}
	c.mkdirAll(path.Dir(name))
	c.dirs[name] = true
	c.header(name, cpioDir|0o755, 0, 0, 0)
}

// file adds a regular file with its parents.
func (c *cpioWriter) file(name string, perm uint32, data []byte) {
	c.mkdirAll(path.Dir(name))
	c.header(name, cpioReg|perm, len(data), 0, 0)
	c.write(data)
	c.pad()
}

// copyFile adds the host file src (symlinks followed) as name.
func (c *cpioWriter) copyFile(name, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	c.file(name, uint32(fi.Mode().Perm()), b)
	return c.err
}

// symlink adds a symbolic link name -> target.
func (c *cpioWriter) symlink(name, target string) {
	c.mkdirAll(path.Dir(name))
	c.header(name, cpioLink|0o777, len(target), 0, 0)
	c.write([]byte(target))
	c.pad()
}

// charDev adds a character device node.
func (c *cpioWriter) charDev(name string, perm, major, minor uint32) {
	c.mkdirAll(path.Dir(name))
	c.header(name, cpioChr|perm, 0, major, minor)
}

// close writes the trailer.
func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
