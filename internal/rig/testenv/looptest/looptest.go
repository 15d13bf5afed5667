// Package looptest drives real loop devices for integration tests through
// the kernel's ioctls (no losetup needed): create a device with
// LOOP_CTL_ADD, attach a backing file with LOOP_CONFIGURE, detach with
// LOOP_CLR_FD, delete with LOOP_CTL_REMOVE. Each step makes the kernel send
// the uevents (and log lines) a real disk would.
package looptest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Device is a loop device created by Add.
type Device struct {
	Index   int
	Name    string // "loop231"
	ctl     *os.File
	dev     *os.File
	removed bool // by a Remove that succeeded
}

// Add creates a new loop device with an unused index in [200, 1000).
func Add() (*Device, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open loop-control: %w", err)
	}
	for range 50 {
		idx := 200 + rand.IntN(800)
		r, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_ADD, uintptr(idx))
		if e == unix.EEXIST {
			continue
		}
		if e != 0 {
			ctl.Close()
			return nil, fmt.Errorf("LOOP_CTL_ADD %d: %w", idx, e)
		}
		return &Device{Index: int(r), Name: "loop" + strconv.Itoa(int(r)), ctl: ctl}, nil
	}
	ctl.Close()
	return nil, errors.New("LOOP_CTL_ADD: no free index")
}

// Attach backs the device with a new sparse file of size bytes in dir.
func (d *Device) Attach(dir string, size int64) error {
	f, err := os.CreateTemp(dir, "loop-*.img")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	dev, err := openDev(filepath.Join("/dev", d.Name))
	if err != nil {
		return err
	}
	cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
	if err := unix.IoctlLoopConfigure(int(dev.Fd()), &cfg); err != nil {
		dev.Close()
		return fmt.Errorf("LOOP_CONFIGURE %s: %w", d.Name, err)
	}
	d.dev = dev
	return nil
}

// openDev opens the device node, waiting briefly for devtmpfs to make it.
func openDev(path string) (*os.File, error) {
	var err error
	for range 100 {
		var f *os.File
		if f, err = os.OpenFile(path, os.O_RDWR, 0); err == nil {
			return f, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, fmt.Errorf("open %s: %w", path, err)
}

// Detach removes the backing file (LOOP_CLR_FD).
func (d *Device) Detach() error {
	if d.dev == nil {
		return nil
	}
	err := unix.IoctlSetInt(int(d.dev.Fd()), unix.LOOP_CLR_FD, 0)
	d.dev.Close()
	d.dev = nil
	if err != nil {
		return fmt.Errorf("LOOP_CLR_FD %s: %w", d.Name, err)
	}
	return nil
}

// Remove detaches (if attached) and deletes the device (LOOP_CTL_REMOVE),
// retrying while it is still busy.
func (d *Device) Remove() error {
	derr := d.Detach()
	var err error
	for range 100 {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, d.ctl.Fd(), unix.LOOP_CTL_REMOVE, uintptr(d.Index))
		if e == 0 {
			err = nil
			break
		}
		err = fmt.Errorf("LOOP_CTL_REMOVE %d: %w", d.Index, e)
		if e != unix.EBUSY {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.ctl.Close()
	err = errors.Join(derr, err)
	d.removed = err == nil
	return err
}

// Close removes the device unless a Remove already did, ignoring errors:
// defer it right after Add so that a test that fails before its own
// Remove leaves no device behind.
func (d *Device) Close() {
	if !d.removed {
		d.Remove()
	}
}
