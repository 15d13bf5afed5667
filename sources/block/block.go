// Package block is the block-device source: disks and partitions added,
// removed and changed (media change included), and block-layer I/O errors,
// as RFC block_notification records.
//
// Mainline kernels never merged block watch_queue notifications, so the
// source derives them: add/remove/change from kobject uevents
// (SUBSYSTEM=block, via sources/uevent) and errors from the block layer's
// error line in the kernel log (every format generation since Linux 4.x,
// via sources/kmsg), with the device name resolved to major:minor through
// sysfs. Its health is therefore "derived".
//
// Losses reported upstream (uevent buffer overruns with estimated counts,
// kernel-log overwrites with exact counts) and the block layer's own rate
// limiting ("blk_print_req_error: N callbacks suppressed") become loss
// events of source block.
package block

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/internal/relay"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/sysfs"
	"github.com/notifyd/notifyd/sources/uevent"
)

// Config configures the source. Uevents and Kmsg are shared with other
// sources and run by their owner (the daemon); either may be nil, which
// leaves that part out (health degraded).
type Config struct {
	Uevents *uevent.Monitor
	Kmsg    *kmsg.Reader
	// SysRoot is where sysfs is mounted ("": /sys).
	SysRoot string
}

// Source is the block source. It implements sources.Source.
type Source struct {
	cfg            Config
	events, losses atomic.Uint64
	unresolved     atomic.Uint64
	since          time.Time

	mu      sync.Mutex
	running bool
	seedErr error
}

var _ sources.Source = (*Source)(nil)

// New returns the block source.
func New(cfg Config) *Source {
	if cfg.SysRoot == "" {
		cfg.SysRoot = sysfs.Root
	}
	return &Source{cfg: cfg, since: time.Now()}
}

// Name returns "block".
func (s *Source) Name() string { return "block" }

// derivedReason is the health reason while everything works.
const derivedReason = "this kernel has no block watch_queue notifications (the RFC block_notification " +
	"patches were never merged); events are derived from uevents (add/remove/change) and kernel-log " +
	"error lines (I/O errors)"

// Health reports derived while both inputs run, degraded when one of them
// is missing or failing, unavailable when neither runs.
func (s *Source) Health() event.Health {
	h := event.Health{Name: "block", Source: event.SourceBlock, State: event.HealthDerived,
		Reason: derivedReason, Since: s.since, Events: s.events.Load(), Losses: s.losses.Load()}
	var parts []event.Health
	if s.cfg.Uevents != nil {
		parts = append(parts, s.cfg.Uevents.Health())
	} else {
		parts = append(parts, event.Health{Name: "uevent", State: event.HealthUnavailable, Reason: "not configured"})
	}
	if s.cfg.Kmsg != nil {
		parts = append(parts, s.cfg.Kmsg.Health())
	} else {
		parts = append(parts, event.Health{Name: "kmsg", State: event.HealthUnavailable, Reason: "not configured"})
	}
	return combine(h, parts, s.seedError())
}

func (s *Source) seedError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seedErr
}

// combine derives a combined source's health from its inputs' health.
func combine(h event.Health, parts []event.Health, seedErr error) event.Health {
	var bad []string
	up := 0
	for _, p := range parts {
		switch p.State {
		case event.HealthLive, event.HealthDerived:
			up++
			h.Origins = append(h.Origins, p.Origins...)
			continue
		case event.HealthStarting:
			h.Origins = append(h.Origins, p.Origins...)
			if h.State == event.HealthDerived {
				h.State = event.HealthStarting
			}
			continue
		}
		bad = append(bad, fmt.Sprintf("%s %s: %s", p.Name, p.State, p.Reason))
		if h.Errno == "" {
			h.Errno = p.Errno
		}
		if p.Since.After(h.Since) {
			h.Since = p.Since
		}
	}
	if seedErr != nil {
		bad = append(bad, "snapshot: "+seedErr.Error())
	}
	switch {
	case len(bad) == 0:
		return h
	case up == 0 && len(parts)-up == len(bad):
		h.State = event.HealthUnavailable
	default:
		h.State = event.HealthDegraded
	}
	h.Reason = strings.Join(bad, "; ") + " (" + derivedReasonShort + ")"
	return h
}

const derivedReasonShort = "no block watch_queue notifications in this kernel: derived from uevent and kmsg"

// Run seeds the present disks and partitions, then publishes events until
// ctx is cancelled. It returns an error only when it has no input at all.
func (s *Source) Run(ctx context.Context, sink sources.Sink) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("block source already running")
	}
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()
	if s.cfg.Uevents == nil && s.cfg.Kmsg == nil {
		return errors.New("start block source: neither uevents nor kernel log configured")
	}
	// Subscribe before the snapshot, so that nothing falls between them.
	var wg sync.WaitGroup
	if s.cfg.Uevents != nil {
		sub := s.cfg.Uevents.Subscribe(func(u *uevent.Uevent) bool { return u.Subsystem() == "block" })
		defer sub.Close()
		wg.Go(func() {
			relay.Pump(ctx, sub, func(u *uevent.Uevent) {
				if ev := FromUevent(u, s.cfg.SysRoot); ev != nil {
					s.publish(sink, ev)
				}
			}, func(l *relay.Loss) { s.publishLoss(sink, l) })
		})
	}
	if s.cfg.Kmsg != nil {
		sub := s.cfg.Kmsg.Subscribe(matchKmsg)
		defer sub.Close()
		wg.Go(func() {
			relay.Pump(ctx, sub, func(r *kmsg.Record) { s.handleKmsg(sink, r) }, func(l *relay.Loss) { s.publishLoss(sink, l) })
		})
	}
	s.seed(sink)
	wg.Wait()
	return nil
}

func matchKmsg(r *kmsg.Record) bool {
	return strings.Contains(r.Text, " error, dev ") || strings.HasSuffix(r.Text, " callbacks suppressed")
}

func (s *Source) seed(sink sources.Sink) {
	devs, err := sysfs.BlockDevices(s.cfg.SysRoot)
	s.mu.Lock()
	s.seedErr = err
	s.mu.Unlock()
	for _, d := range devs {
		ev := &event.Event{
			Time: time.Now(), Source: event.SourceBlock, Subtype: event.SnapshotPresent, Tag: event.NoTag,
			Origin:   event.OriginSysfs,
			Block:    &event.BlockFields{Major: d.Major, Minor: d.Minor, Device: d.Name},
			Props:    map[string]string{"DEVTYPE": d.Type, "DEVPATH": d.Devpath},
			StateKey: stateKey(d.Major, d.Minor),
			Snapshot: true,
			// A present device is recorded as the add record it would
			// have been.
			Raw: record.EncodeBlock(record.BlockAdd, record.MkDev(d.Major, d.Minor), 0),
		}
		sink.Seed(ev)
	}
}

func stateKey(major, minor uint32) string {
	return "block:" + strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10)
}

func (s *Source) publishLoss(sink sources.Sink, l *relay.Loss) {
	ev := event.NewLoss(event.SourceBlock, l.Origin, l.Count, l.Reason)
	ev.Loss.Estimated = l.Estimated
	s.losses.Add(1)
	sink.Publish(ev)
}

func (s *Source) publish(sink sources.Sink, ev *event.Event) {
	raw, err := record.FromEvent(ev)
	if err == nil {
		ev.Raw = raw
	}
	s.events.Add(1)
	sink.Publish(ev)
}

// FromUevent maps a SUBSYSTEM=block uevent to an event (without Raw), or
// nil for actions that are not block events (bind, move, …).
func FromUevent(u *uevent.Uevent, sysRoot string) *event.Event {
	if u.Subsystem() != "block" {
		return nil
	}
	var sub string
	switch u.Action {
	case "add":
		sub = event.BlockAdd
	case "remove":
		sub = event.BlockRemove
	case "change":
		sub = event.BlockChange
		if u.Get("DISK_MEDIA_CHANGE") == "1" {
			sub = event.BlockMediaChange
		}
	default:
		return nil
	}
	name := u.Get("DEVNAME")
	if name == "" {
		name = u.Name()
	}
	name = strings.TrimPrefix(name, "/dev/")
	ma, err1 := strconv.ParseUint(u.Get("MAJOR"), 10, 32)
	mi, err2 := strconv.ParseUint(u.Get("MINOR"), 10, 32)
	if err1 != nil || err2 != nil {
		a, b, err := sysfs.ResolveBlock(sysRoot, name)
		if err != nil {
			return nil // a block uevent without a device number names no block device
		}
		ma, mi = uint64(a), uint64(b)
	}
	return &event.Event{
		Time: time.Now(), Source: event.SourceBlock, Subtype: sub, Tag: event.NoTag, Origin: event.OriginUevent,
		Block:       &event.BlockFields{Major: uint32(ma), Minor: uint32(mi), Device: name},
		Props:       u.Props,
		StateKey:    stateKey(uint32(ma), uint32(mi)),
		StateRemove: sub == event.BlockRemove,
	}
}

// handleKmsg publishes what a kernel record means for block devices: an
// error event, a loss for rate-limited error lines, or nothing.
func (s *Source) handleKmsg(sink sources.Sink, r *kmsg.Record) {
	if !r.Kernel() {
		return
	}
	if fn, n, ok := kmsg.Suppressed(r.Text); ok {
		if rateLimited(fn) && n > 0 {
			s.publishLoss(sink, &relay.Loss{Origin: event.OriginKmsg, Count: n,
				Reason: fmt.Sprintf("kernel rate limit suppressed %d block error lines (%s)", n, r.Text)})
		}
		return
	}
	if ev, ok := s.FromKmsg(r); ok {
		s.publish(sink, ev)
	}
}

// FromKmsg maps a kernel-log block error line to an event (without Raw).
// The device's major:minor comes from sysfs; when the device is already
// gone they are 0 and Props["RESOLVE_ERROR"] says why.
func (s *Source) FromKmsg(r *kmsg.Record) (*event.Event, bool) {
	if !r.Kernel() {
		return nil, false
	}
	l, ok := ParseError(r.Text)
	if !ok || l.Subtype == "" {
		return nil, false
	}
	props := map[string]string{"MESSAGE": r.Text, "STATUS": l.Status, "KMSG_SEQ": strconv.FormatUint(r.Seq, 10)}
	if l.Op != "" {
		props["OP"] = l.Op
	}
	ma, mi, err := sysfs.ResolveBlock(s.cfg.SysRoot, l.Dev)
	if err != nil {
		s.unresolved.Add(1)
		props["RESOLVE_ERROR"] = err.Error()
	}
	ev := &event.Event{
		Time: time.Now(), Source: event.SourceBlock, Subtype: l.Subtype, Tag: event.NoTag, Origin: event.OriginKmsg,
		Block: &event.BlockFields{Major: ma, Minor: mi, Device: l.Dev, Sector: l.Sector, HasSector: true},
		Props: props,
	}
	// No StateKey: an I/O error is not a change of the disk's state, so
	// it must neither replace the disk in the hub's current-state table
	// nor be folded with the disk's add/remove by the coalesce policy.
	return ev, true
}
