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
// Every event carries the device's identity (vendor, model, serial, size,
// removable, partition, a loop device's backing file), read from sysfs
// when it happens and kept for its remove and errors (sources/identity);
// change storms can be folded at the source (Config.Coalesce).
//
// Losses reported upstream (uevent buffer overruns with estimated counts,
// kernel-log overwrites with exact counts) and the block layer's own rate
// limiting ("blk_print_req_error: N callbacks suppressed") become loss
// events of source block.
package block

import (
	"context"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/identity"
	"github.com/notifyd/notifyd/sources/internal/derived"
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
	// Coalesce is the storm-coalescing window: change (and media-change)
	// events of one device within it after the first are folded into one
	// event with their count (event.Event.Coalesced). 0 turns it off.
	// Adds, removes and errors are never folded (docs/fanout.md).
	Coalesce time.Duration
}

// Source is the block source. It implements sources.Source.
type Source struct {
	cfg        Config
	d          *derived.Source
	unresolved atomic.Uint64

	// ids is each present device's identity, by StateKey, for its
	// remove and error events.
	ids identity.Cache[identity.Block]
}

var _ sources.Source = (*Source)(nil)

// New returns the block source.
func New(cfg Config) *Source {
	if cfg.SysRoot == "" {
		cfg.SysRoot = sysfs.Root
	}
	s := &Source{cfg: cfg}
	s.d = derived.New(derived.Spec{
		Name: "block", Source: event.SourceBlock,
		Reason: "this kernel has no block watch_queue notifications (the RFC block_notification " +
			"patches were never merged); events are derived from uevents (add/remove/change) and kernel-log " +
			"error lines (I/O errors)",
		Short:   "no block watch_queue notifications in this kernel: derived from uevent and kmsg",
		Uevents: cfg.Uevents, Kmsg: cfg.Kmsg,
		MatchUevent: func(u *uevent.Uevent) bool { return u.Subsystem() == "block" },
		MatchKmsg:   matchKmsg,
		FromUevent:  func(u *uevent.Uevent) *event.Event { return FromUevent(u, s.cfg.SysRoot) },
		FromKmsg:    s.kmsgEvent,
		Present:     s.present,
		Complete:    s.identify,
		// Changes and media changes fold (the coalescer's default).
		Coalesce: cfg.Coalesce,
		Object:   object,
	})
	return s
}

// Name returns "block".
func (s *Source) Name() string { return s.d.Name() }

// Health reports derived while both inputs run, starting while one is
// still opening, degraded when one is missing or failing or the snapshot
// failed, unavailable when neither runs.
func (s *Source) Health() event.Health { return s.d.Health() }

// Run seeds the present disks and partitions, then publishes events until
// ctx is cancelled. It returns an error only when it has no input at all.
func (s *Source) Run(ctx context.Context, sink sources.Sink) error { return s.d.Run(ctx, sink) }

// object is what an event is about for coalescing: the device, errors
// included (which have no StateKey), so that an error flushes the
// device's pending change first.
func object(ev *event.Event) string {
	if ev.StateKey != "" {
		return ev.StateKey
	}
	if b := ev.Block; b != nil && (b.Major != 0 || b.Minor != 0) {
		return eventrec.BlockStateKey(b.Major, b.Minor)
	}
	return ""
}

// identify fills ev's identity: read from sysfs now for add (and for
// changes and errors of a device not seen before), refreshed from the
// cache plus the few attributes a change alters for change and
// media-change, from the cache for remove and errors; udev's properties complete it when the event came
// from udev.
func (s *Source) identify(ev *event.Event) {
	b := ev.Block
	if b == nil {
		return
	}
	key := object(ev)
	var id identity.Block
	var ok bool
	// The kernel name finds the device of an error logged after it was
	// gone (no device number then).
	byName := "name:" + b.Device
	switch ev.Subtype {
	case event.BlockRemove:
		id, ok = s.ids.Delete(key)
		s.ids.Delete(byName)
	case event.BlockChange, event.BlockMediaChange:
		// A device seen before: refresh only what a change can alter,
		// and nothing for a synthetic uevent (a write to its uevent
		// file, as udevadm trigger does: SYNTH_UUID set), which
		// re-announces a state the cache already holds.
		if id, ok = s.ids.Get(key); ok {
			if _, synth := ev.Props["SYNTH_UUID"]; !synth {
				identity.RefreshBlock(s.cfg.SysRoot, b.Device, &id)
			}
		} else {
			id, ok = identity.ReadBlock(s.cfg.SysRoot, b.Device)
		}
	case event.BlockAdd:
		if id, ok = identity.ReadBlock(s.cfg.SysRoot, b.Device); !ok {
			id, ok = s.ids.Get(key)
		}
	default: // errors
		if key != "" {
			id, ok = s.ids.Get(key)
		} else if b.Device != "" {
			id, ok = s.ids.Get(byName)
		}
		if !ok {
			id, ok = identity.ReadBlock(s.cfg.SysRoot, b.Device)
		}
	}
	if ev.Via == uevent.ViaUdev {
		identity.BlockFromUdev(ev.Props, &id)
		ok = true
	}
	if !ok {
		return
	}
	id.Apply(b)
	if key != "" && ev.Subtype != event.BlockRemove {
		s.ids.Put(key, id)
		if b.Device != "" {
			s.ids.Put(byName, id)
		}
	}
}

func matchKmsg(r *kmsg.Record) bool {
	return strings.Contains(r.Text, " error, dev ") || strings.HasSuffix(r.Text, " callbacks suppressed")
}

// present lists the disks and partitions in sysfs as snapshot events,
// reading each one's identity as it goes.
func (s *Source) present() (iter.Seq[*event.Event], error) {
	devs, err := sysfs.BlockDevices(s.cfg.SysRoot)
	return func(yield func(*event.Event) bool) {
		for _, d := range devs {
			key := eventrec.BlockStateKey(d.Major, d.Minor)
			fields := &event.BlockFields{Major: d.Major, Minor: d.Minor, Device: d.Name}
			if id, ok := identity.ReadBlock(s.cfg.SysRoot, d.Name); ok {
				id.Apply(fields)
				s.ids.Put(key, id)
				s.ids.Put("name:"+d.Name, id)
			}
			// Recorded as the add record it would have been (Raw unset).
			ev := &event.Event{Block: fields, Props: map[string]string{"DEVTYPE": d.Type, "DEVPATH": d.Devpath}, StateKey: key}
			if !yield(ev) {
				return
			}
		}
	}, err
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
	// The kernel name (sysfs's, the snapshot's and the error lines'),
	// not DEVNAME: that is the /dev path, which differs for a name with
	// '!' ("etherd!e0.0" is /dev/etherd/e0.0).
	name := u.Name()
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
		Via:         u.Via,
		Block:       &event.BlockFields{Major: uint32(ma), Minor: uint32(mi), Device: name},
		Props:       u.Props,
		StateKey:    eventrec.BlockStateKey(uint32(ma), uint32(mi)),
		StateRemove: sub == event.BlockRemove,
	}
}

// kmsgEvent maps a kernel record to what it means for block devices: an
// error event (without identity or Raw), a loss for rate-limited error
// lines, or nil.
func (s *Source) kmsgEvent(r *kmsg.Record) *event.Event {
	if !r.Kernel() {
		return nil
	}
	if fn, n, ok := kmsg.Suppressed(r.Text); ok {
		if rateLimited(fn) && n > 0 {
			return s.d.Loss(&relay.Loss{Origin: event.OriginKmsg, Count: n,
				Reason: fmt.Sprintf("kernel rate limit suppressed %d block error lines (%s)", n, r.Text)})
		}
		return nil
	}
	if ev, ok := s.FromKmsg(r); ok {
		return ev
	}
	return nil
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
		Block: &event.BlockFields{Major: ma, Minor: mi, Device: sysfs.KernelName(l.Dev), Sector: l.Sector, HasSector: true},
		Props: props,
	}
	// No StateKey: an I/O error is not a change of the disk's state, so
	// it must neither replace the disk in the hub's current-state table
	// nor be folded with the disk's add/remove by the coalesce policy.
	return ev, true
}
