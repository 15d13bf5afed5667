// Package superblock is the superblock source: filesystem errors and
// filesystems forced read-only, as RFC superblock_notification records
// (docs/record-abi.md).
//
// Mainline never merged the RFC's watch_sb(). The source reads what the
// kernel has, and every event says which (its origin):
//
//   - fanotify FAN_FS_ERROR (Linux 5.16+): a FAN_REPORT_FID group with a
//     FAN_MARK_FILESYSTEM mark on every block-device filesystem of the
//     mount table (followed through sources/mount as filesystems come and
//     go). Each event carries the errno and the number of errors the
//     kernel merged into it. ext4 reports there.
//   - the kernel log, through sources/kmsg, for the filesystems that only
//     log (XFS, btrfs, and ext4 where fanotify is missing): "EXT4-fs
//     error", XFS corruption and shutdown lines, "BTRFS error", and the
//     read-only switch ("Remounting filesystem read-only", btrfs "forced
//     readonly"), which fanotify never reports. Only kernel records count
//     (facility 0): a line a process writes to /dev/kmsg is ignored,
//     however exact.
//
// An ext4 error both logs a line and posts FAN_FS_ERROR; where the
// filesystem is marked, the line is not published again (Stats.Covered).
package superblock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/internal/fanotify"
	"github.com/notifyd/notifyd/sources/internal/relay"
	"github.com/notifyd/notifyd/sources/internal/reopen"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/mount"
	"github.com/notifyd/notifyd/sources/sysfs"
)

// Config configures the source. Kmsg and Mounts are shared with other
// sources and run by their owner (the daemon); either may be nil.
type Config struct {
	Kmsg *kmsg.Reader
	// Mounts is the mount source whose table says which filesystems to
	// mark; without it the filesystems mounted at start are marked and
	// later ones are not (health degraded).
	Mounts *mount.Source
	// SysRoot is where sysfs is mounted ("": /sys).
	SysRoot string
	// mountinfo is read at start when Mounts is nil ("":
	// /proc/self/mountinfo); tests.
	mountinfo string
	// noFanotify leaves FAN_FS_ERROR out, as on a kernel without it;
	// tests.
	noFanotify bool
}

// Stats are the source's counters.
type Stats struct {
	FSErrors   uint64 // FAN_FS_ERROR events read
	LogLines   uint64 // error and read-only lines published
	Covered    uint64 // error lines not published: the filesystem reports FAN_FS_ERROR
	Marked     uint64 // filesystems marked now
	MarkFailed uint64 // filesystems that could not be marked
	Suppressed uint64 // ext4 error lines the kernel's rate limit dropped
	Overflows  uint64 // fanotify queue overflows
}

// fs is a filesystem the source knows from the mount table.
type fs struct {
	major, minor uint32
	fstype       string
	point        string // a mount point outside users' private areas, "" when none
	mounts       int
	marked       bool
	reports      bool // posts FAN_FS_ERROR (ext4, or seen doing so)
	fsid         [2]int32
}

// Source is the superblock source. It implements sources.Source.
type Source struct {
	cfg   Config
	since time.Time

	fsErrors, logLines, covered, markFailed, suppressed, overflows, events, losses atomic.Uint64

	mu       sync.Mutex
	running  bool
	stopped  bool
	fans     *fanotify.Group
	fanErr   error
	fss      map[[2]uint32]*fs // by device
	byFSID   map[[2]int32]*fs
	markErrs map[string]int // errno name → filesystems
	sink     sources.Sink
}

var _ sources.Source = (*Source)(nil)

// New returns the superblock source.
func New(cfg Config) *Source {
	if cfg.SysRoot == "" {
		cfg.SysRoot = sysfs.Root
	}
	if cfg.mountinfo == "" {
		cfg.mountinfo = "/proc/self/mountinfo"
	}
	return &Source{cfg: cfg, since: time.Now(), fss: map[[2]uint32]*fs{}, byFSID: map[[2]int32]*fs{}, markErrs: map[string]int{},
		fanErr: errors.New("not started")}
}

// Name returns "superblock".
func (s *Source) Name() string { return "superblock" }

// reportsFSError are the filesystems known to post FAN_FS_ERROR (Linux
// 6.18: ext4 only); others are learned when they do.
var reportsFSError = map[string]bool{"ext4": true}

// Stats returns the counters.
func (s *Source) Stats() Stats {
	s.mu.Lock()
	marked := 0
	for _, f := range s.fss {
		if f.marked {
			marked++
		}
	}
	s.mu.Unlock()
	return Stats{FSErrors: s.fsErrors.Load(), LogLines: s.logLines.Load(), Covered: s.covered.Load(), Marked: uint64(marked),
		MarkFailed: s.markFailed.Load(), Suppressed: s.suppressed.Load(), Overflows: s.overflows.Load()}
}

// Health: live when FAN_FS_ERROR and the kernel log both run, derived
// from the log alone when fanotify is missing, degraded when the log is.
func (s *Source) Health() event.Health {
	h := event.Health{Name: "superblock", Source: event.SourceSuperblock, Since: s.since,
		Events: s.events.Load(), Losses: s.losses.Load()}
	s.mu.Lock()
	fanErr, running := s.fanErr, s.running
	marked, failed := 0, 0
	for _, f := range s.fss {
		if f.marked {
			marked++
		}
	}
	var why []string
	for e, n := range s.markErrs {
		failed += n
		why = append(why, fmt.Sprintf("%d %s", n, e))
	}
	s.mu.Unlock()
	slices.Sort(why)
	kh := event.Health{Name: "kmsg", State: event.HealthUnavailable, Reason: "not configured"}
	if s.cfg.Kmsg != nil {
		kh = s.cfg.Kmsg.Health()
	}
	klive := kh.State == event.HealthLive || kh.State == event.HealthStarting
	if !running {
		h.State, h.Reason = event.HealthStarting, "not started"
		if s.stopped {
			h.State, h.Reason = event.HealthUnavailable, "stopped"
		}
		return h
	}
	fanText := fmt.Sprintf("FAN_FS_ERROR marks on %d filesystems", marked)
	if failed > 0 {
		fanText += fmt.Sprintf(" (%d could not be marked: %s)", failed, strings.Join(why, ", "))
	}
	if s.cfg.Mounts == nil {
		fanText += "; no mount source: filesystems mounted later are not marked"
	}
	// Every filesystem refused its mark (EPERM without CAP_SYS_ADMIN):
	// fanotify opened but watches nothing, so it is not an input.
	noMarks := fanErr == nil && marked == 0 && failed > 0
	switch {
	case noMarks && klive:
		h.State, h.Origins = event.HealthDerived, []event.Origin{event.OriginKmsg}
		h.Reason = fanText + ": errors and read-only switches from kernel-log lines only"
	case noMarks:
		h.State = event.HealthUnavailable
		h.Reason = fanText + " and " + kh.Name + " " + string(kh.State) + ": " + kh.Reason
		h.Errno = kh.Errno
	case fanErr == nil && klive:
		h.State, h.Origins = event.HealthLive, []event.Origin{event.OriginFanotify, event.OriginKmsg}
		h.Reason = fanText + "; kernel-log error lines for filesystems that only log (xfs, btrfs)"
		if s.cfg.Mounts == nil {
			h.State = event.HealthDegraded
		}
	case fanErr == nil:
		h.State, h.Origins = event.HealthDegraded, []event.Origin{event.OriginFanotify}
		h.Reason = fanText + "; " + kh.Name + " " + string(kh.State) + ": " + kh.Reason +
			" (no xfs/btrfs errors, no read-only switches)"
		h.Errno = kh.Errno
	case klive:
		h.State, h.Origins = event.HealthDerived, []event.Origin{event.OriginKmsg}
		h.Reason = "no FAN_FS_ERROR (" + fanErr.Error() + "): errors and read-only switches from kernel-log lines only"
		h.Errno = reopen.ErrnoName(fanErr)
	default:
		h.State = event.HealthUnavailable
		h.Reason = "no FAN_FS_ERROR (" + fanErr.Error() + ") and " + kh.Name + " " + string(kh.State) + ": " + kh.Reason
		h.Errno = reopen.ErrnoName(fanErr)
	}
	return h
}

// Run marks the filesystems and publishes events until ctx is
// cancelled. It returns an error only when it has no input at all.
func (s *Source) Run(ctx context.Context, sink sources.Sink) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("superblock source already running")
	}
	s.running, s.sink = true, sink
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running, s.stopped = false, true
		if s.fans != nil {
			s.fans.Close()
			s.fans = nil
		}
		s.fanErr = errors.New("stopped")
		s.mu.Unlock()
	}()

	g, err := fanotify.Init(unix.FAN_CLASS_NOTIF | unix.FAN_REPORT_FID)
	if s.cfg.noFanotify && err == nil {
		g.Close()
		g, err = nil, fmt.Errorf("fanotify_init: %w", unix.ENOSYS)
	}
	s.mu.Lock()
	s.fans, s.fanErr = g, err
	s.mu.Unlock()
	if err != nil && s.cfg.Kmsg == nil {
		return fmt.Errorf("start superblock source: no FAN_FS_ERROR (%w) and no kernel log", err)
	}

	var wg sync.WaitGroup
	if s.cfg.Kmsg != nil {
		sub := s.cfg.Kmsg.Subscribe(matchKmsg)
		defer sub.Close()
		wg.Go(func() {
			relay.Pump(ctx, sub, func(r *kmsg.Record) { s.handleKmsg(r) }, func(l *relay.Loss) { s.publishLoss(l) })
		})
	}
	// Follow the mount table (or read it once).
	if s.cfg.Mounts != nil {
		cur, sub := s.cfg.Mounts.Subscribe()
		defer sub.Close()
		for i := range cur {
			s.addMount(&cur[i])
		}
		wg.Go(func() {
			// A mount storm can overflow the queue: then the table is
			// read again, so that no new filesystem stays unmarked.
			relay.Pump(ctx, sub, func(ev *event.Event) { s.handleMount(ev) },
				func(*relay.Loss) { s.resyncMounts(s.cfg.Mounts.Table()) })
		})
	} else if b, err := os.ReadFile(s.cfg.mountinfo); err == nil {
		if rows, err := mount.ParseMountinfo(b); err == nil {
			for _, r := range rows {
				uid, private := mount.PrivateTo(r.Point)
				s.addMount(&event.MountFields{Major: r.Major, Minor: r.Minor, FSType: r.FSType, Point: r.Point,
					UID: uid, Private: private})
			}
		}
	}
	if g != nil {
		wg.Go(func() { s.readFanotify(ctx, g) })
	}
	wg.Wait()
	return nil
}

func matchKmsg(r *kmsg.Record) bool {
	return strings.HasPrefix(r.Text, "EXT4-fs ") || strings.HasPrefix(r.Text, "XFS (") || strings.HasPrefix(r.Text, "BTRFS")
}

// handleMount follows the mount table: a filesystem seen for the first
// time is marked; one whose last mount went is forgotten (its superblock
// and the mark go with it, or a new mount marks it again).
func (s *Source) handleMount(ev *event.Event) {
	m := ev.Mount
	if m == nil {
		return
	}
	switch ev.Subtype {
	case event.MountNew, event.SnapshotPresent:
		s.addMount(m)
	case event.MountUnmount:
		s.mu.Lock()
		defer s.mu.Unlock()
		if f := s.fss[[2]uint32{m.Major, m.Minor}]; f != nil {
			f.mounts--
			if f.mounts <= 0 {
				delete(s.fss, [2]uint32{m.Major, m.Minor})
				if f.marked {
					delete(s.byFSID, f.fsid)
				}
			}
		}
	}
}

// resyncMounts rebuilds the mount counts from the whole table and marks
// the filesystems not marked yet (after the mount subscription lost
// events).
func (s *Source) resyncMounts(rows []event.MountFields) {
	s.mu.Lock()
	old := s.fss
	s.fss = map[[2]uint32]*fs{}
	for k, f := range old {
		if f.marked { // keep the mark and its fsid; the count is rebuilt
			f.mounts = 0
			s.fss[k] = f
		}
	}
	s.mu.Unlock()
	for i := range rows {
		s.addMount(&rows[i])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, f := range s.fss {
		if f.mounts == 0 {
			delete(s.fss, k)
			delete(s.byFSID, f.fsid)
		}
	}
}

// wantMark says whether a filesystem is worth a FAN_FS_ERROR mark: one on
// a block device (btrfs shows an anonymous device number, but is one).
func wantMark(m *event.MountFields) bool {
	return m.Major != 0 || m.FSType == "btrfs"
}

func (s *Source) addMount(m *event.MountFields) {
	if m.Point == "" {
		return
	}
	key := [2]uint32{m.Major, m.Minor}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fss[key]
	if f == nil {
		f = &fs{major: m.Major, minor: m.Minor, fstype: m.FSType, reports: reportsFSError[m.FSType]}
		s.fss[key] = f
	}
	if f.point == "" && !m.Private {
		// Superblock events go to every local user (docs/policy.md): a
		// mount point in a user's private area, which that user's mount
		// events keep to them, is not one to name.
		f.point = m.Point
	}
	f.mounts++
	if f.marked || s.fans == nil || !wantMark(m) {
		return
	}
	fsid, err := s.mark(m.Point, m.Major, m.Minor)
	if err != nil {
		s.markFailed.Add(1)
		n := reopen.ErrnoName(err)
		if n == "" {
			n = err.Error()
		}
		s.markErrs[n]++
		return
	}
	f.marked, f.fsid = true, fsid
	s.byFSID[fsid] = f
}

// mark opens the mount point without following it (O_PATH), checks that
// it is still the filesystem the table names (a mount point can be
// covered by another mount), and marks that filesystem through the
// descriptor, so that nothing can swap the path in between. Called with
// s.mu held.
func (s *Source) mark(point string, major, minor uint32) ([2]int32, error) {
	fd, err := unix.Open(point, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return [2]int32{}, fmt.Errorf("open %s: %w", point, err)
	}
	defer unix.Close(fd)
	// What is mounted there may be a user's FUSE filesystem covering the
	// point: nothing may ask its server (it need never answer, and s.mu
	// is held), so the device and type are those the kernel has cached
	// (AT_STATX_DONT_SYNC), and only the expected filesystem is asked
	// more (statfs).
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &st); err != nil {
		return [2]int32{}, fmt.Errorf("stat %s: %w", point, err)
	}
	if st.Dev_major != major || st.Dev_minor != minor {
		return [2]int32{}, fmt.Errorf("mark %s: %w", point, unix.EXDEV) // covered by another mount
	}
	if st.Mask&unix.STATX_TYPE == 0 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		// fanotify_mark takes an O_PATH descriptor only as the directory
		// of a relative path: a file bind-mounted somewhere is left to
		// the filesystem's other mounts.
		return [2]int32{}, fmt.Errorf("mark %s: %w", point, unix.ENOTDIR)
	}
	var sf unix.Statfs_t
	if err := unix.Fstatfs(fd, &sf); err != nil {
		return [2]int32{}, fmt.Errorf("statfs %s: %w", point, err)
	}
	if err := s.fans.Mark(unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, unix.FAN_FS_ERROR, fd, "."); err != nil {
		return [2]int32{}, err
	}
	return [2]int32{sf.Fsid.Val[0], sf.Fsid.Val[1]}, nil
}

// readFanotify reads the FAN_FS_ERROR group on the kernel-reader
// skeleton's read loop (reopen.ReadLoop over a reopen.Conn) until ctx
// ends. It does not reopen: a failed group falls back to the log.
func (s *Source) readFanotify(ctx context.Context, g *fanotify.Group) {
	c, err := reopen.NewConn(g)
	if err == nil {
		err = reopen.ReadLoop(ctx, c, make([]byte, 16<<10), &reopen.Parse{
			What: "read fanotify group",
			Batch: func(b []byte) error {
				if _, err := fanotify.Parse(b, s.handleFSError); err != nil {
					return fmt.Errorf("decode: %w", err)
				}
				return nil
			},
		})
	}
	if ctx.Err() == nil && err != nil {
		// FS_ERROR events are preallocated per mark and cannot be lost to
		// memory pressure; a read error is unexpected. Report it and fall
		// back to the log.
		s.mu.Lock()
		s.fanErr = fmt.Errorf("read FAN_FS_ERROR events: %w", err)
		s.mu.Unlock()
		ev := event.NewLoss(event.SourceSuperblock, event.OriginFanotify, event.CountUnknown, s.fanErr.Error())
		s.publish(ev)
	}
}

func (s *Source) handleFSError(e *fanotify.Event) {
	if e.Overflow() {
		s.overflows.Add(1)
		s.publish(event.NewLoss(event.SourceSuperblock, event.OriginFanotify, event.CountUnknown,
			"fanotify queue overflowed (FAN_Q_OVERFLOW)"))
		return
	}
	if !e.HasError {
		return
	}
	s.fsErrors.Add(1)
	f := &event.SuperblockFields{Errno: uint32(max(e.Error, 0)), ErrorCount: e.ErrorCount}
	if ino, ok := e.Inode(); ok {
		f.Inode = ino
	}
	s.mu.Lock()
	if fs := s.byFSID[e.FSID]; e.HasFID && fs != nil {
		fs.reports = true
		f.Major, f.Minor, f.FSType, f.Point = fs.major, fs.minor, fs.fstype, fs.point
	}
	s.mu.Unlock()
	if f.Major != 0 || f.Minor != 0 {
		f.Device = blockName(s.cfg.SysRoot, f.Major, f.Minor)
	}
	ev := &event.Event{Time: time.Now(), Source: event.SourceSuperblock, Subtype: event.SuperblockError, Tag: event.NoTag,
		Origin: event.OriginFanotify, Superblock: f, Props: props(f)}
	if e.PID > 0 {
		ev.Props["PID"] = strconv.Itoa(int(e.PID))
	}
	s.publish(ev)
}

// blockName is the kernel's name of block device major:minor (the s_id a
// filesystem logs), from /sys/dev/block; "" when it has none.
func blockName(root string, major, minor uint32) string {
	t, err := os.Readlink(filepath.Join(root, "dev", "block", fmt.Sprintf("%d:%d", major, minor)))
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

// props are the attributes a fixed-signature transport (D-Bus v1) shows.
func props(f *event.SuperblockFields) map[string]string {
	p := map[string]string{}
	set := func(k, v string) {
		if v != "" && v != "0" {
			p[k] = v
		}
	}
	set("DEVICE", f.Device)
	if f.Major != 0 || f.Minor != 0 {
		set("MAJ_MIN", fmt.Sprintf("%d:%d", f.Major, f.Minor))
	}
	set("FSTYPE", f.FSType)
	set("MOUNT_POINT", f.Point)
	set("ERRNO", strconv.FormatUint(uint64(f.Errno), 10))
	set("ERROR_COUNT", strconv.FormatUint(uint64(f.ErrorCount), 10))
	set("INODE", strconv.FormatUint(f.Inode, 10))
	return p
}

// handleKmsg publishes a filesystem's error or read-only line, unless
// FAN_FS_ERROR already reported it.
func (s *Source) handleKmsg(r *kmsg.Record) {
	if ev := s.FromKmsg(r); ev != nil {
		s.logLines.Add(1)
		s.publish(ev)
	}
}

// FromKmsg maps a kernel-log line to an event (with Raw), or nil: for
// lines of other kinds, lines written by processes, and error lines of a
// filesystem that reports FAN_FS_ERROR on a live mark.
func (s *Source) FromKmsg(r *kmsg.Record) *event.Event {
	if !r.Kernel() {
		return nil
	}
	if n, ok := Suppressed(r.Text); ok {
		s.suppressed.Add(n)
		// The line names no filesystem: FAN_FS_ERROR counted the errors
		// only if every ext4 filesystem known has a live mark.
		s.mu.Lock()
		counted := s.fans != nil && s.fanErr == nil
		ext4 := 0
		for _, f := range s.fss {
			if f.fstype == "ext4" {
				ext4++
				counted = counted && f.marked
			}
		}
		counted = counted && ext4 > 0
		s.mu.Unlock()
		if !counted && n > 0 {
			ev := event.NewLoss(event.SourceSuperblock, event.OriginKmsg, n,
				fmt.Sprintf("kernel rate limit suppressed %d ext4 error lines (%s)", n, r.Text))
			s.publish(ev)
		}
		return nil
	}
	l, ok := ParseLog(r.Text)
	if !ok {
		return nil
	}
	f := &event.SuperblockFields{Device: l.Device, FSType: l.FS, Errno: l.Errno, Inode: l.Inode}
	if ma, mi, err := sysfs.ResolveBlock(s.cfg.SysRoot, l.Device); err == nil {
		f.Major, f.Minor = ma, mi
	}
	s.mu.Lock()
	if fs := s.fss[[2]uint32{f.Major, f.Minor}]; fs != nil && (f.Major != 0 || f.Minor != 0) {
		f.Point = fs.point
		if l.Subtype == event.SuperblockError && fs.marked && fs.reports && s.fanErr == nil {
			s.mu.Unlock()
			s.covered.Add(1)
			return nil
		}
	}
	s.mu.Unlock()
	p := props(f)
	p["MESSAGE"], p["KMSG_SEQ"] = r.Text, strconv.FormatUint(r.Seq, 10)
	if l.Function != "" {
		p["FUNCTION"] = l.Function
	}
	ev := &event.Event{Time: time.Now(), Source: event.SourceSuperblock, Subtype: l.Subtype, Tag: event.NoTag,
		Origin: event.OriginKmsg, Superblock: f, Props: p}
	if raw, err := eventrec.FromEvent(ev); err == nil {
		ev.Raw = raw
	}
	return ev
}

func (s *Source) publishLoss(l *relay.Loss) {
	ev := event.NewLoss(event.SourceSuperblock, l.Origin, l.Count, l.Reason)
	ev.Loss.Estimated = l.Estimated
	s.publish(ev)
}

// publish stamps Raw and hands ev to the sink. Error events carry no
// StateKey: an error is not a state.
func (s *Source) publish(ev *event.Event) {
	if ev.Raw == nil {
		if raw, err := eventrec.FromEvent(ev); err == nil {
			ev.Raw = raw
		}
	}
	if ev.Loss != nil {
		s.losses.Add(1)
	} else {
		s.events.Add(1)
	}
	s.mu.Lock()
	sink := s.sink
	s.mu.Unlock()
	if sink != nil {
		sink.Publish(ev)
	}
}
