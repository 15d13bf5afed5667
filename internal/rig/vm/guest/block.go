package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const scsiDebugParams = "/sys/module/scsi_debug/parameters/"

// ScsiDebugMediumError arms the built-in scsi_debug disk so that reading
// count sectors from sector on fails with a medium error, which the kernel
// logs as "critical medium error, dev sdX, sector N ...". It returns the
// disk's device path (for example /dev/sda) and a function that disarms it.
// Read the bad sector with [ReadSector]; the read fails with ENODATA.
func ScsiDebugMediumError(sector uint64, count int) (dev string, restore func() error, err error) {
	disks, _ := filepath.Glob("/sys/bus/pseudo/drivers/scsi_debug/adapter*/host*/target*/*/block/*")
	if len(disks) == 0 {
		return "", nil, errors.New("no scsi_debug disk in /sys/bus/pseudo/drivers/scsi_debug")
	}
	dev = "/dev/" + filepath.Base(disks[0])
	old := map[string]string{}
	for _, p := range []string{"medium_error_start", "medium_error_count", "opts"} {
		b, err := os.ReadFile(scsiDebugParams + p)
		if err != nil {
			return "", nil, fmt.Errorf("read scsi_debug %s: %w", p, err)
		}
		old[p] = strings.TrimSpace(string(b))
	}
	opts, err := strconv.Atoi(old["opts"])
	if err != nil {
		return "", nil, fmt.Errorf("parse scsi_debug opts %q: %w", old["opts"], err)
	}
	restore = func() error {
		var errs []error
		for _, p := range []string{"opts", "medium_error_start", "medium_error_count"} {
			errs = append(errs, writeSys(scsiDebugParams+p, old[p]))
		}
		return errors.Join(errs...)
	}
	const optMediumErr = 2 // SDEBUG_OPT_MEDIUM_ERR
	for _, kv := range [][2]string{
		{"medium_error_start", strconv.FormatUint(sector, 10)},
		{"medium_error_count", strconv.Itoa(count)},
		{"opts", strconv.Itoa(opts | optMediumErr)},
	} {
		if err := writeSys(scsiDebugParams+kv[0], kv[1]); err != nil {
			restore()
			return "", nil, err
		}
	}
	return dev, restore, nil
}

func writeSys(path, v string) error {
	if err := os.WriteFile(path, []byte(v), 0); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ReadSector reads one 4 KiB block at 512-byte sector of dev with
// O_DIRECT, so the read reaches the device and is not served from the page
// cache, and returns the read's error (nil, EIO, ENODATA, ...).
func ReadSector(dev string, sector int64) error {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer unix.Close(fd)
	b, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap buffer: %w", err)
	}
	defer unix.Munmap(b)
	for {
		_, err = unix.Pread(fd, b, sector*512)
		if err != unix.EINTR {
			return err
		}
	}
}

// LoopAttach attaches a free loop device to the file (or block device)
// backing and returns its path, for example /dev/loop0. The kernel sends a
// "change" uevent for the loop device.
func LoopAttach(backing string, readOnly bool) (string, error) {
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open loop-control: %w", err)
	}
	defer unix.Close(ctl)
	n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return "", fmt.Errorf("get free loop device: %w", err)
	}
	path := fmt.Sprintf("/dev/loop%d", n)
	mode := unix.O_RDWR
	if readOnly {
		mode = unix.O_RDONLY
	}
	bf, err := unix.Open(backing, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", backing, err)
	}
	defer unix.Close(bf)
	lfd, err := openWait(path, unix.O_RDWR)
	if err != nil {
		return "", err
	}
	defer unix.Close(lfd)
	cfg := unix.LoopConfig{Fd: uint32(bf), Size: 512}
	if readOnly {
		cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY
	}
	copy(cfg.Info.File_name[:], backing)
	if err := unix.IoctlLoopConfigure(lfd, &cfg); err != nil {
		return "", fmt.Errorf("configure %s: %w", path, err)
	}
	return path, nil
}

// LoopDetach detaches the loop device dev (LOOP_CLR_FD).
func LoopDetach(dev string) error {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); err != nil {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	return nil
}

// openWait opens a device node, waiting briefly for devtmpfs to create it.
func openWait(path string, mode int) (int, error) {
	var err error
	for i := 0; i < 100; i++ {
		var fd int
		fd, err = unix.Open(path, mode|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return -1, fmt.Errorf("open %s: %w", path, err)
}

// LoopOnDMError creates a device-mapper "error" target of the given size
// (in 512-byte sectors) named name, and a read-only loop device on top of
// it. An O_DIRECT read of the loop device ([ReadSector]) fails with EIO
// and the kernel logs "I/O error, dev loopN, sector S ...". It returns the
// loop device path and a cleanup function that detaches the loop device
// and removes the dm device.
func LoopOnDMError(name string, sectors uint64) (loop string, cleanup func() error, err error) {
	dm, err := DMCreate(name, sectors, "error", "")
	if err != nil {
		return "", nil, err
	}
	loop, err = LoopAttach(dm, true)
	if err != nil {
		DMRemove(name)
		return "", nil, err
	}
	return loop, func() error {
		return errors.Join(LoopDetach(loop), DMRemove(name))
	}, nil
}

const dmIoctlSize = int(unsafe.Sizeof(unix.DmIoctl{}))

func dmIoctl(req uint, name string, flags uint32, target []byte) ([]byte, error) {
	ctl, err := openWait("/dev/mapper/control", unix.O_RDWR)
	if err != nil {
		return nil, err
	}
	defer unix.Close(ctl)
	b := make([]byte, dmIoctlSize+len(target)+1024)
	le := binary.LittleEndian
	le.PutUint32(b[0:], 4) // version 4.0.0
	le.PutUint32(b[12:], uint32(len(b)))
	le.PutUint32(b[16:], uint32(dmIoctlSize)) // data_start
	if target != nil {
		le.PutUint32(b[20:], 1) // target_count
	}
	le.PutUint32(b[28:], flags)
	copy(b[48:48+127], name)
	copy(b[dmIoctlSize:], target)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(ctl), uintptr(req), uintptr(unsafe.Pointer(&b[0]))); e != 0 {
		return nil, e
	}
	return b, nil
}

// DMCreate creates and resumes a single-target device-mapper device, for
// example DMCreate("bad", 8192, "error", "") or DMCreate("fl", 8192,
// "flakey", "/dev/loop0 0 0 1"), and returns its path (/dev/dm-N).
func DMCreate(name string, sectors uint64, target, params string) (string, error) {
	r, err := dmIoctl(unix.DM_DEV_CREATE, name, 0, nil)
	if err != nil {
		return "", fmt.Errorf("create dm device %s: %w", name, err)
	}
	dev := binary.LittleEndian.Uint64(r[40:])
	minor := (dev & 0xff) | ((dev >> 12) & 0xfff00)
	// struct dm_target_spec: sector_start, length, status, next, target_type[16], then params.
	spec := make([]byte, 40+len(params)+1)
	for len(spec)%8 != 0 {
		spec = append(spec, 0)
	}
	binary.LittleEndian.PutUint64(spec[0:], 0)
	binary.LittleEndian.PutUint64(spec[8:], sectors)
	binary.LittleEndian.PutUint32(spec[20:], uint32(len(spec)))
	copy(spec[24:40], target)
	copy(spec[40:], params)
	if _, err := dmIoctl(unix.DM_TABLE_LOAD, name, 0, spec); err != nil {
		DMRemove(name)
		return "", fmt.Errorf("load dm table %q: %w", target+" "+params, err)
	}
	if _, err := dmIoctl(unix.DM_DEV_SUSPEND, name, 0, nil); err != nil { // no DM_SUSPEND_FLAG: resume
		DMRemove(name)
		return "", fmt.Errorf("resume dm device %s: %w", name, err)
	}
	path := fmt.Sprintf("/dev/dm-%d", minor)
	if fd, err := openWait(path, unix.O_RDONLY); err == nil {
		unix.Close(fd)
	}
	return path, nil
}

// DMRemove removes the device-mapper device name.
func DMRemove(name string) error {
	if _, err := dmIoctl(unix.DM_DEV_REMOVE, name, 0, nil); err != nil {
		return fmt.Errorf("remove dm device %s: %w", name, err)
	}
	return nil
}
