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
package usb

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

// Config configures the source; see block.Config.
type Config struct {
	Uevents *uevent.Monitor
	Kmsg    *kmsg.Reader
	SysRoot string // "": /sys
}

// Source is the USB source. It implements sources.Source.
type Source struct {
	cfg            Config
	events, losses atomic.Uint64
	since          time.Time

	mu      sync.Mutex
	running bool
	seedErr error
	speeds  map[string]LogLine // last "new" line per device name
}

var _ sources.Source = (*Source)(nil)

// New returns the USB source.
func New(cfg Config) *Source {
	if cfg.SysRoot == "" {
		cfg.SysRoot = sysfs.Root
	}
	return &Source{cfg: cfg, since: time.Now(), speeds: make(map[string]LogLine)}
}

// Name returns "usb".
func (s *Source) Name() string { return "usb" }

const derivedReason = "this kernel has no USB watch_queue notifications (the RFC usb_notification " +
	"patches were never merged); add/remove are derived from uevents, resets from kernel-log lines"

// Health reports derived while both inputs run, degraded when one is
// missing or failing, unavailable when neither runs.
func (s *Source) Health() event.Health {
	h := event.Health{Name: "usb", Source: event.SourceUSB, State: event.HealthDerived, Reason: derivedReason,
		Since: s.since, Events: s.events.Load(), Losses: s.losses.Load()}
	var bad []string
	up, parts := 0, 0
	add := func(p event.Health) {
		parts++
		switch p.State {
		case event.HealthLive, event.HealthDerived, event.HealthStarting:
			up++
			h.Origins = append(h.Origins, p.Origins...)
			return
		}
		bad = append(bad, fmt.Sprintf("%s %s: %s", p.Name, p.State, p.Reason))
		if h.Errno == "" {
			h.Errno = p.Errno
		}
	}
	if s.cfg.Uevents != nil {
		add(s.cfg.Uevents.Health())
	} else {
		add(event.Health{Name: "uevent", State: event.HealthUnavailable, Reason: "not configured"})
	}
	if s.cfg.Kmsg != nil {
		add(s.cfg.Kmsg.Health())
	} else {
		add(event.Health{Name: "kmsg", State: event.HealthUnavailable, Reason: "not configured"})
	}
	s.mu.Lock()
	if s.seedErr != nil {
		bad = append(bad, "snapshot: "+s.seedErr.Error())
	}
	s.mu.Unlock()
	if len(bad) > 0 {
		h.State = event.HealthDegraded
		if up == 0 {
			h.State = event.HealthUnavailable
		}
		h.Reason = strings.Join(bad, "; ") + " (no USB watch_queue notifications in this kernel: derived from uevent and kmsg)"
	}
	return h
}

// Run seeds the present USB devices, then publishes events until ctx is
// cancelled. It returns an error only when it has no input at all.
func (s *Source) Run(ctx context.Context, sink sources.Sink) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("usb source already running")
	}
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()
	if s.cfg.Uevents == nil && s.cfg.Kmsg == nil {
		return errors.New("start usb source: neither uevents nor kernel log configured")
	}
	var wg sync.WaitGroup
	if s.cfg.Uevents != nil {
		sub := s.cfg.Uevents.Subscribe(func(u *uevent.Uevent) bool {
			return u.Subsystem() == "usb" && u.Get("DEVTYPE") == "usb_device"
		})
		defer sub.Close()
		wg.Go(func() {
			relay.Pump(ctx, sub, func(u *uevent.Uevent) {
				if ev := s.FromUevent(u); ev != nil {
					s.publish(sink, ev)
				}
			}, func(l *relay.Loss) { s.publishLoss(sink, l) })
		})
	}
	if s.cfg.Kmsg != nil {
		sub := s.cfg.Kmsg.Subscribe(func(r *kmsg.Record) bool {
			return strings.HasPrefix(r.Text, "usb ") || strings.HasPrefix(r.Text, "hub ")
		})
		defer sub.Close()
		wg.Go(func() {
			relay.Pump(ctx, sub, func(r *kmsg.Record) {
				if ev := s.FromKmsg(r); ev != nil {
					s.publish(sink, ev)
				}
			}, func(l *relay.Loss) { s.publishLoss(sink, l) })
		})
	}
	s.seed(sink)
	wg.Wait()
	return nil
}

func (s *Source) seed(sink sources.Sink) {
	devs, err := sysfs.USBDevices(s.cfg.SysRoot)
	s.mu.Lock()
	s.seedErr = err
	s.mu.Unlock()
	for _, d := range devs {
		sub := record.USBAdd
		if d.RootHub {
			sub = record.USBBusAdd
		}
		sink.Seed(&event.Event{
			Time: time.Now(), Source: event.SourceUSB, Subtype: event.SnapshotPresent, Tag: event.NoTag,
			Origin: event.OriginSysfs,
			USB: &event.USBFields{Name: d.Name, Busnum: d.Busnum, Devnum: d.Devnum, VendorID: d.VendorID,
				ProductID: d.Product, Speed: d.Speed},
			StateKey: "usb:" + d.Name,
			Snapshot: true,
			Raw:      record.EncodeUSB(sub, d.Name, 0),
		})
	}
}

func (s *Source) publish(sink sources.Sink, ev *event.Event) {
	if raw, err := record.FromEvent(ev); err == nil {
		ev.Raw = raw
	}
	s.events.Add(1)
	sink.Publish(ev)
}

func (s *Source) publishLoss(sink sources.Sink, l *relay.Loss) {
	ev := event.NewLoss(event.SourceUSB, l.Origin, l.Count, l.Reason)
	ev.Loss.Estimated = l.Estimated
	s.losses.Add(1)
	sink.Publish(ev)
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
		USB: f, Props: u.Props, StateKey: "usb:" + name, StateRemove: u.Action == "remove",
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
		ev.StateKey, ev.StateRemove = "usb:"+l.Name, sub == event.USBRemove
	}
	return ev
}
