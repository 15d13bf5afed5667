package superblock

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/testenv/mountns"
	"github.com/notifyd/notifyd/sources/internal/fanotify"
)

// fuseServer mounts a FUSE filesystem on dir whose server (this test)
// answers INIT and refuses every other request, noting its opcode: what
// a hostile user's FUSE server would see, and could leave unanswered.
type fuseServer struct {
	mu      sync.Mutex
	opcodes []uint32
	done    chan struct{}
}

const (
	fuseInit      = 26
	fuseInHeader  = 40 // struct fuse_in_header
	fuseOutHeader = 16 // struct fuse_out_header
	fuseInitOut   = 64 // struct fuse_init_out (7.36)
)

func mountFUSE(t *testing.T, dir string) *fuseServer {
	t.Helper()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	testenv.Require(t, err, "open /dev/fuse", "modprobe fuse")
	opts := "fd=" + strconv.Itoa(fd) + ",rootmode=40000,user_id=0,group_id=0"
	if err := unix.Mount("hostile", dir, "fuse.hostile", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(fd)
		testenv.Require(t, err, "mount a FUSE filesystem", "modprobe fuse")
	}
	f := &fuseServer{done: make(chan struct{})}
	go f.serve(fd)
	t.Cleanup(func() {
		unix.Unmount(dir, unix.MNT_DETACH)
		unix.Close(fd) // the read in progress returns ENODEV once unmounted
		<-f.done
	})
	return f
}

func (f *fuseServer) serve(fd int) {
	defer close(f.done)
	ne := binary.NativeEndian
	buf := make([]byte, 1<<20)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOENT) {
			continue // interrupted, or a request the kernel withdrew
		}
		if err != nil || n < fuseInHeader {
			return // ENODEV: unmounted
		}
		op, unique := ne.Uint32(buf[4:]), ne.Uint64(buf[8:])
		var out []byte
		if op == fuseInit {
			out = make([]byte, fuseOutHeader+fuseInitOut)
			ne.PutUint32(out[fuseOutHeader:], 7)       // major
			ne.PutUint32(out[fuseOutHeader+4:], 31)    // minor
			ne.PutUint32(out[fuseOutHeader+20:], 4096) // max_write
		} else {
			f.mu.Lock()
			f.opcodes = append(f.opcodes, op)
			f.mu.Unlock()
			out = make([]byte, fuseOutHeader)
			errno := int32(unix.ENOSYS)
			ne.PutUint32(out[4:], uint32(-errno))
		}
		ne.PutUint32(out, uint32(len(out)))
		ne.PutUint64(out[8:], unique)
		unix.Write(fd, out)
	}
}

func (f *fuseServer) requests() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.opcodes)
}

// TestIntegrationMarkCoveredByFUSE: a user who covers the mount point of
// a filesystem to mark with a FUSE filesystem of their own must not make
// the source ask their server anything: marking runs with the source's
// lock held, and a server that never answers would stop the source (its
// kernel-log and FAN_FS_ERROR events, its health). The point is refused
// as covered (EXDEV) without a request.
func TestIntegrationMarkCoveredByFUSE(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	dir := t.TempDir()
	srv := mountFUSE(t, dir)
	g, err := fanotify.Init(unix.FAN_CLASS_NOTIF | unix.FAN_REPORT_FID)
	testenv.Require(t, err, "FAN_REPORT_FID group (Linux 5.1)", "")
	defer g.Close()
	s := New(Config{SysRoot: t.TempDir()})
	s.fans, s.fanErr = g, nil
	// The table says an ext4 filesystem is mounted at dir; the FUSE
	// mount covers it.
	s.addMount(&event.MountFields{Major: 8, Minor: 1, FSType: "ext4", Point: dir})
	if got := srv.requests(); len(got) != 0 {
		t.Errorf("marking asked the FUSE server covering the mount point: opcodes %v", got)
	}
	if s.markErrs["EXDEV"] != 1 || s.fss[[2]uint32{8, 1}].marked {
		t.Errorf("covered mount point: mark errors %v, filesystem %+v", s.markErrs, s.fss[[2]uint32{8, 1}])
	}
	// The server is live: a stat of the covered point asks it.
	os.Stat(dir)
	if got := srv.requests(); len(got) == 0 {
		t.Errorf("the test's FUSE server saw no request for a stat of its root")
	}
}
