// Package usb is the USB source: devices added, removed and reset, and
// buses (root hubs) added and removed, as RFC usb_notification records
// whose name is the kernel's dev_name ("1-1.2", "usb1").
//
// Mainline kernels never merged USB watch_queue notifications, so the
// source derives them: add/remove from kobject uevents (SUBSYSTEM=usb,
// DEVTYPE=usb_device, via sources/uevent) and resets from the USB core's
// "reset … USB device number N using …" kernel-log line (a reset produces
// no uevent at all), with the "new … USB device number" line supplying the
// speed. When no uevents are available, the "new" and "USB disconnect"
// lines stand in for add and remove. Failures (descriptor read errors,
// address errors, over-current, a port the hub disabled, …) exist only as
// kernel-log lines too: they become error events with the port, the
// errno and a class (ParseError).
//
// Every event carries the device's identity (its strings, serial, class,
// and vendor and product names from the USB ID database), read from sysfs
// at its add and kept for its resets, errors and remove
// (sources/identity).
package usb

import (
	"context"
	"iter"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/identity"
	"github.com/notifyd/notifyd/sources/internal/derived"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/sysfs"
	"github.com/notifyd/notifyd/sources/uevent"
)

// Config configures the source; see block.Config.
type Config struct {
	Uevents *uevent.Monitor
	Kmsg    *kmsg.Reader
	SysRoot string // "": /sys
	// IDs names vendors, products and classes (nil: the USB ID database
	// at identity.DefaultIDPaths, when the machine has one).
	IDs *identity.IDs
	// Coalesce is the storm-coalescing window for resets of one device
	// (a device that keeps resetting): resets within it after the first
	// are folded into one event with their count. 0 turns it off. Adds,
	// removes and errors are never folded (docs/fanout.md).
	Coalesce time.Duration
}

// Source is the USB source. It implements sources.Source.
type Source struct {
	cfg Config
	d   *derived.Source

	mu     sync.Mutex
	speeds map[string]LogLine // last "new" line per device name

	// ids is each present device's identity, by StateKey, for its
	// remove, reset and error events.
	ids identity.Cache[identity.USB]
}

var _ sources.Source = (*Source)(nil)

// New returns the USB source.
func New(cfg Config) *Source {
	if cfg.SysRoot == "" {
		cfg.SysRoot = sysfs.Root
	}
	if cfg.IDs == nil {
		cfg.IDs = identity.NewIDs()
	}
	s := &Source{cfg: cfg, speeds: make(map[string]LogLine)}
	s.d = derived.New(derived.Spec{
		Name: "usb", Source: event.SourceUSB,
		Reason: "this kernel has no USB watch_queue notifications (the RFC usb_notification " +
			"patches were never merged); add/remove are derived from uevents, resets from kernel-log lines",
		Short:   "no USB watch_queue notifications in this kernel: derived from uevent and kmsg",
		Note:    s.idsNote,
		Uevents: cfg.Uevents, Kmsg: cfg.Kmsg,
		MatchUevent: func(u *uevent.Uevent) bool {
			return u.Subsystem() == "usb" && u.Get("DEVTYPE") == "usb_device"
		},
		MatchKmsg: func(r *kmsg.Record) bool {
			return strings.HasPrefix(r.Text, "usb ") || strings.HasPrefix(r.Text, "hub ")
		},
		FromUevent: s.uevent,
		FromKmsg:   s.FromKmsg,
		Present:    s.present,
		Complete:   s.identify,
		Coalesce:   cfg.Coalesce,
		Foldable:   func(ev *event.Event) bool { return ev.Subtype == event.USBReset },
		Object:     object,
	})
	return s
}

// Name returns "usb".
func (s *Source) Name() string { return s.d.Name() }

// Health reports derived while both inputs run, starting while one is
// still opening, degraded when one is missing or failing or the snapshot
// failed, unavailable when neither runs.
func (s *Source) Health() event.Health { return s.d.Health() }

// Run seeds the present USB devices, then publishes events until ctx is
// cancelled. It returns an error only when it has no input at all.
func (s *Source) Run(ctx context.Context, sink sources.Sink) error { return s.d.Run(ctx, sink) }

// idsNote says where vendor and product names come from.
func (s *Source) idsNote() string {
	if p, err := s.cfg.IDs.Path(); p != "" {
		return "; vendor and product names from " + p
	} else if err != nil {
		return "; no USB ID database (" + err.Error() + "): devices are named by their own strings"
	}
	return ""
}

// uevent maps a usb_device uevent: a bind refreshes the device's
// identity (it is configured: its interfaces exist now, which name the
// class of a device whose class is "defined at interface level");
// add and remove are events (FromUevent).
func (s *Source) uevent(u *uevent.Uevent) *event.Event {
	if u.Action == "bind" {
		s.refresh(u.Name())
		return nil
	}
	return s.FromUevent(u)
}

// stateKey is the StateKey of events about device name ("usb:1-1.2").
func stateKey(name string) string { return "usb:" + name }

// object is the device an event is about ("usb:1-1.2"), resets and
// errors included.
func object(ev *event.Event) string {
	if ev.StateKey != "" {
		return ev.StateKey
	}
	if u := ev.USB; u != nil && u.Name != "" {
		return stateKey(u.Name)
	}
	return ""
}

// refresh reads a present device's identity again into the cache.
func (s *Source) refresh(name string) {
	if id, ok := identity.ReadUSB(s.cfg.SysRoot, name, s.cfg.IDs); ok {
		s.ids.Put(stateKey(name), id)
	}
}

// identify fills ev's identity: read from sysfs now for add, from the
// cache for remove, reset and error (read now for a device not seen
// before, when it is still there).
func (s *Source) identify(ev *event.Event) {
	u := ev.USB
	if u == nil || u.Name == "" {
		return
	}
	key := stateKey(u.Name)
	var id identity.USB
	var ok bool
	switch ev.Subtype {
	case event.USBRemove, event.USBBusRemove:
		id, ok = s.ids.Delete(key)
	case event.USBAdd, event.USBBusAdd:
		if id, ok = identity.ReadUSB(s.cfg.SysRoot, u.Name, s.cfg.IDs); ok {
			s.ids.Put(key, id)
		}
	default:
		if id, ok = s.ids.Get(key); !ok {
			if id, ok = identity.ReadUSB(s.cfg.SysRoot, u.Name, s.cfg.IDs); ok {
				s.ids.Put(key, id)
			}
		}
	}
	if ok {
		id.Apply(u)
	}
}

// present lists the USB devices in sysfs as snapshot events, reading
// each one's identity as it goes.
func (s *Source) present() (iter.Seq[*event.Event], error) {
	devs, err := sysfs.USBDevices(s.cfg.SysRoot)
	return func(yield func(*event.Event) bool) {
		for _, d := range devs {
			sub := record.USBAdd
			if d.RootHub {
				sub = record.USBBusAdd
			}
			f := &event.USBFields{Name: d.Name, Busnum: d.Busnum, Devnum: d.Devnum, VendorID: d.VendorID,
				ProductID: d.Product, Speed: d.Speed}
			if id, ok := identity.ReadUSB(s.cfg.SysRoot, d.Name, s.cfg.IDs); ok {
				id.Apply(f)
				s.ids.Put(stateKey(d.Name), id)
			}
			// A root hub is recorded as the bus add it would have been.
			ev := &event.Event{USB: f, StateKey: stateKey(d.Name), Raw: record.EncodeUSB(sub, d.Name, 0)}
			if !yield(ev) {
				return
			}
		}
	}, err
}

// FromUevent maps a usb_device add/remove uevent to an event (without
// Raw), or nil for anything else (bind, unbind, interfaces).
func (s *Source) FromUevent(u *uevent.Uevent) *event.Event {
	if u.Subsystem() != "usb" || u.Get("DEVTYPE") != "usb_device" {
		return nil
	}
	name := u.Name()
	root := sysfs.IsRootHub(name)
	var sub string
	switch {
	case u.Action == "add" && root:
		sub = event.USBBusAdd
	case u.Action == "add":
		sub = event.USBAdd
	case u.Action == "remove" && root:
		sub = event.USBBusRemove
	case u.Action == "remove":
		sub = event.USBRemove
	default:
		return nil
	}
	f := &event.USBFields{Name: name, Busnum: num(u.Get("BUSNUM")), Devnum: num(u.Get("DEVNUM"))}
	f.VendorID, f.ProductID = sysfs.ParseProduct(u.Get("PRODUCT"))
	s.mu.Lock()
	if l, ok := s.speeds[name]; ok && l.Devnum == f.Devnum {
		f.Speed, f.Driver = l.Speed, l.Driver
	}
	if sub == event.USBRemove || sub == event.USBBusRemove {
		delete(s.speeds, name)
	}
	s.mu.Unlock()
	if f.Speed == "" && u.Action == "add" {
		f.Speed = sysfsSpeed(s.cfg.SysRoot, name)
	}
	return &event.Event{
		Time: time.Now(), Source: event.SourceUSB, Subtype: sub, Tag: event.NoTag, Origin: event.OriginUevent,
		Via: u.Via, USB: f, Props: u.Props, StateKey: stateKey(name), StateRemove: u.Action == "remove",
	}
}

// fromErrorLine maps a USB core failure line to an error event, or nil.
// An error is not a change of presence: no StateKey.
func (s *Source) fromErrorLine(r *kmsg.Record) *event.Event {
	l, ok := ParseError(r.Text)
	if !ok {
		return nil
	}
	f := &event.USBFields{Name: l.Name, Busnum: busnum(l.Name), Error: l.Errno, Port: l.Port, Class: l.Class}
	if d, err := sysfs.USBDevice(s.cfg.SysRoot, l.Name); err == nil {
		f.VendorID, f.ProductID, f.Devnum = d.VendorID, d.Product, d.Devnum
	}
	props := map[string]string{"MESSAGE": r.Text, "KMSG_SEQ": strconv.FormatUint(r.Seq, 10), "ERROR_CLASS": l.Class}
	if l.Port != 0 {
		props["PORT"] = strconv.Itoa(int(l.Port))
	}
	return &event.Event{
		Time: time.Now(), Source: event.SourceUSB, Subtype: event.USBError, Tag: event.NoTag, Origin: event.OriginKmsg,
		USB: f, Props: props,
	}
}

func sysfsSpeed(root, name string) string {
	d, err := sysfs.USBDevice(root, name)
	if err != nil {
		return ""
	}
	return d.Speed
}

func num(s string) uint16 {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}

// presenceFromLog reports whether add/remove must come from the kernel log
// because there are no uevents.
func (s *Source) presenceFromLog() bool {
	return s.cfg.Uevents == nil || s.cfg.Uevents.Health().State == event.HealthUnavailable
}

// FromKmsg maps a USB core log line to an event (without Raw): reset
// and failure lines always; new/disconnect lines only when uevents are
// unavailable (otherwise a "new" line only records the device's speed).
// It returns nil for other lines.
func (s *Source) FromKmsg(r *kmsg.Record) *event.Event {
	if !r.Kernel() {
		return nil
	}
	l, ok := ParseLog(r.Text)
	if !ok {
		return s.fromErrorLine(r)
	}
	var sub string
	switch l.Kind {
	case "new":
		s.mu.Lock()
		s.speeds[l.Name] = l
		s.mu.Unlock()
		if !s.presenceFromLog() {
			return nil
		}
		sub = event.USBAdd
	case "reset":
		sub = event.USBReset
	case "disconnect":
		if !s.presenceFromLog() {
			return nil
		}
		sub = event.USBRemove
		s.mu.Lock()
		delete(s.speeds, l.Name)
		s.mu.Unlock()
	}
	f := &event.USBFields{Name: l.Name, Busnum: l.Busnum(), Devnum: l.Devnum, Speed: l.Speed, Driver: l.Driver}
	if sub == event.USBReset {
		// The device is still there: vendor/product from sysfs.
		if d, err := sysfs.USBDevice(s.cfg.SysRoot, l.Name); err == nil {
			f.VendorID, f.ProductID = d.VendorID, d.Product
		}
	}
	ev := &event.Event{
		Time: time.Now(), Source: event.SourceUSB, Subtype: sub, Tag: event.NoTag, Origin: event.OriginKmsg,
		USB: f, Props: map[string]string{"MESSAGE": r.Text, "KMSG_SEQ": strconv.FormatUint(r.Seq, 10)},
	}
	// A reset is not a change of the device's presence: no StateKey, so
	// it neither replaces the device in the current-state table nor is
	// folded with its add/remove by the coalesce policy.
	if sub != event.USBReset {
		ev.StateKey, ev.StateRemove = stateKey(l.Name), sub == event.USBRemove
	}
	return ev
}
