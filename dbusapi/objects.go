package dbusapi

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// Device objects: one object per present device or mount that every local
// user may see, kept by one subscription of the subscription core made
// with the lsm.Everyone subject (so the policy decides what is exported,
// through the same Watch and Post hooks as for any subscriber) and a
// snapshot, then the live events. ObjectManager signals are broadcasts:
// what is private stays behind unicast subscriptions.
//
// An object's properties are the state after the event whose seq its Seq
// property reports: the exporter applies events in seq order and each
// object remembers the last one that changed it.

// devicesFilter is the exporter's subscription filter.
const devicesFilter = "source == block || source == usb || source == mount"

// batchWait is how long the exporter lets events gather after the first
// of a batch: device objects are for people, so a storm of changes to one
// device becomes one PropertiesChanged per object per batchWait, and the
// exporter costs the other subscribers little CPU per event.
const batchWait = 20 * time.Millisecond

// devObject is one exported object.
type devObject struct {
	path   dbus.ObjectPath
	key    string       // StateKey
	ev     *event.Event // last state event
	seq    uint64       // seq of the last event that changed the object
	time   uint64       // its time (µs)
	last   string       // its subtype
	errors uint64
	lastEr string
	props  map[string]map[string]dbus.Variant // by interface
	// told is what the bus was last told of the object (InterfacesAdded
	// or PropertiesChanged); props differ from it while it is dirty.
	told map[string]map[string]dbus.Variant
}

// objects is the device-object exporter of one session.
type objects struct {
	sess *session

	mu      sync.Mutex
	byKey   map[string]*devObject
	byPath  map[dbus.ObjectPath]*devObject
	mounts  map[string]map[string]struct{} // "MAJ:MIN" -> mount points
	dirty   map[*devObject]struct{}        // changed since told
	epoch   uint64
	managed map[dbus.ObjectPath]map[string]map[string]dbus.Variant // GetManagedObjects reply, rebuilt lazily
	flight  map[uint32]int                                         // GetManagedObjects in flight per uid
	peak    int
	refused uint64
	resyncs uint64
	err     string // why no objects are exported, if so
}

func newObjects(sess *session) *objects {
	return &objects{
		sess:   sess,
		byKey:  map[string]*devObject{},
		byPath: map[dbus.ObjectPath]*devObject{},
		mounts: map[string]map[string]struct{}{},
		dirty:  map[*devObject]struct{}{},
		flight: map[uint32]int{},
	}
}

// run keeps the object set until the session ends. It is one goroutine
// owned by the session.
func (o *objects) run() {
	core := o.sess.svc.cfg.Core
	done := o.sess.conn.Context().Done()
	var cn *subs.Conn
	defer func() {
		if cn != nil {
			cn.Close()
		}
	}()
	for {
		if cn == nil || cn.Err() != nil {
			if cn != nil {
				cn.Close()
			}
			var err error
			cn, err = core.Open(subs.Peer{Cred: lsm.Everyone(), Transport: "dbus", Label: "dbus device objects (every local user)"})
			if err != nil {
				cn = nil
				o.setErr(fmt.Sprintf("open: %v", err))
				if !o.sleep(done, retryWait) {
					return
				}
				continue
			}
		}
		pol := policyOf(core)
		fs, err := cn.Subscribe(subs.Request{Filter: devicesFilter, Policy: fanout.DropOldest, QueueLen: core.Limits().MaxQueueLen, Snapshot: true})
		if err != nil {
			// Denied: the policy lets every local user see none of
			// these sources; nothing is exported. Ask again later (a
			// reload may change that).
			o.setErr(fmt.Sprintf("subscribe: %v", err))
			o.reconcile(0, nil)
			if !o.sleep(done, retryWait) {
				return
			}
			continue
		}
		o.setErr("")
		o.reconcile(fs.Hello.Epoch, fs.Hello.Snapshot)
		resync := o.follow(fs, done, core, pol)
		fs.Close()
		if !resync {
			return
		}
		o.mu.Lock()
		o.resyncs++
		o.mu.Unlock()
	}
}

// retryWait is how long the exporter waits before it asks again for a
// subscription the policy refused, or a connection the core refused.
const retryWait = 30 * time.Second

// policyCheck is how often the exporter looks whether the policy was
// replaced (a reload): then it takes a new snapshot, so that objects the
// new policy hides from some user go at once, not at their next event.
const policyCheck = 2 * time.Second

// policyOf returns the policy in force, to notice a reload.
func policyOf(core *subs.Core) *lsm.Policy {
	if e := core.Policy(); e != nil {
		return e.Policy()
	}
	return nil
}

// sleep waits d; false when the session ended first.
func (o *objects) sleep(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		return true
	}
}

// follow applies live events until the session ends (false), or a loss
// makes the object set unreliable or the policy was replaced (true: take
// a new snapshot).
func (o *objects) follow(fs *subs.Sub, done <-chan struct{}, core *subs.Core, pol *lsm.Policy) bool {
	batch := make([]*event.Event, 0, 256)
	check := time.NewTicker(policyCheck)
	defer check.Stop()
	for {
		select {
		case <-done:
			return false
		case <-fs.Done():
			return o.sess.conn.Context().Err() == nil
		case <-check.C:
			if policyOf(core) != pol {
				return true
			}
			continue
		case <-fs.Ready():
		}
		t := time.NewTimer(batchWait)
		select {
		case <-done:
			t.Stop()
			return false
		case <-t.C:
		}
		batch = fs.Drain(batch[:0])
		var out []signal
		lost := false
		o.mu.Lock()
		for _, ev := range batch {
			if ev.Loss != nil {
				lost = true
				break
			}
			out = o.applyLocked(ev, out)
		}
		out = o.flushLocked(out)
		o.mu.Unlock()
		o.emit(out)
		clear(batch)
		if lost {
			return true
		}
	}
}

func (o *objects) setErr(s string) {
	o.mu.Lock()
	o.err = s
	o.mu.Unlock()
}

// objectKey is the object an event is about: its StateKey, or for an
// error event (which has none) the key of the device it names.
func objectKey(ev *event.Event) string {
	if ev.StateKey != "" {
		return ev.StateKey
	}
	switch {
	case ev.Block != nil:
		return "block:" + strconv.FormatUint(uint64(ev.Block.Major), 10) + ":" + strconv.FormatUint(uint64(ev.Block.Minor), 10)
	case ev.USB != nil && ev.USB.Name != "":
		return "usb:" + ev.USB.Name
	}
	return ""
}

// exported reports whether the state event ev makes an object: every
// present block device, USB device and mount, except a loop device with
// nothing attached (it is there, but nothing is plugged in).
func exported(ev *event.Event) bool {
	if ev.StateRemove {
		return false
	}
	switch ev.Source {
	case event.SourceBlock:
		b := ev.Block
		if b == nil {
			return false
		}
		if strings.HasPrefix(b.Device, "loop") && b.BackingFile == "" && b.Size == 0 {
			return false
		}
		return true
	case event.SourceUSB:
		return ev.USB != nil && ev.USB.Name != ""
	case event.SourceMount:
		return ev.Mount != nil
	}
	return false
}

func isError(ev *event.Event) bool {
	switch ev.Source {
	case event.SourceBlock:
		switch ev.Subtype {
		case event.BlockAdd, event.BlockRemove, event.BlockChange, event.BlockMediaChange:
			return false
		}
		return ev.StateKey == ""
	case event.SourceUSB:
		return ev.Subtype == event.USBError
	}
	return false
}

// usec is ev's time in Unix microseconds, 0 for the zero time.
func usec(ev *event.Event) uint64 {
	if ev.Time.IsZero() {
		return 0
	}
	return uint64(ev.Time.UnixMicro())
}

// pathFor returns a free object path for a new object.
func (o *objects) pathFor(ev *event.Event) dbus.ObjectPath {
	var kind, name string
	switch ev.Source {
	case event.SourceBlock:
		kind, name = "block", ev.Block.Device
		if name == "" {
			name = fmt.Sprintf("%d:%d", ev.Block.Major, ev.Block.Minor)
		}
	case event.SourceUSB:
		kind, name = "usb", ev.USB.Name
	default:
		kind, name = "mount", strconv.FormatUint(ev.Mount.ID, 10)
	}
	p := dbus.ObjectPath(api.DBusDevicesPrefix + "/" + kind + "/" + api.DBusEscapePathElement(name))
	if _, taken := o.byPath[p]; !taken {
		return p
	}
	for i := 2; ; i++ {
		q := dbus.ObjectPath(string(p) + "_" + strconv.Itoa(i))
		if _, taken := o.byPath[q]; !taken {
			return q
		}
	}
}

// signal is a broadcast to emit after the lock is released.
type signal struct {
	path   dbus.ObjectPath
	member string
	body   []any
}

func (o *objects) applyLocked(ev *event.Event, out []signal) []signal {
	key := objectKey(ev)
	if key == "" {
		return out
	}
	obj := o.byKey[key]
	if ev.Source == event.SourceMount {
		out = o.mountChangedLocked(obj, ev, out)
	}
	if ev.StateKey == "" {
		// An error (or a reset) of a device: it changes the object's
		// counters, not its presence.
		if obj == nil {
			return out
		}
		obj.seq, obj.time, obj.last = ev.Seq, usec(ev), ev.Subtype
		if isError(ev) {
			obj.errors++
			obj.lastEr = ev.Subtype
		}
		return o.changedLocked(obj, out)
	}
	if !exported(ev) {
		if obj != nil {
			out = o.removeLocked(obj, out)
		}
		return out
	}
	if obj == nil {
		obj = &devObject{path: o.pathFor(ev), key: key}
		obj.ev, obj.seq, obj.time, obj.last = ev, ev.Seq, usec(ev), ev.Subtype
		o.byKey[key], o.byPath[obj.path] = obj, obj
		obj.props = o.propsLocked(obj)
		obj.told = obj.props
		o.managed = nil
		return append(out, signal{api.DBusPath, api.DBusObjectManagerInterface + "." + api.DBusSignalInterfacesAdded,
			[]any{obj.path, obj.props}})
	}
	obj.ev, obj.seq, obj.time, obj.last = ev, ev.Seq, usec(ev), ev.Subtype
	return o.changedLocked(obj, out)
}

func (o *objects) removeLocked(obj *devObject, out []signal) []signal {
	delete(o.byKey, obj.key)
	delete(o.byPath, obj.path)
	delete(o.dirty, obj)
	o.managed = nil
	// The same interfaces InterfacesAdded listed (GDBus's object manager
	// client removes the object only when every proxied one goes).
	ifaces := slices.Sorted(maps.Keys(obj.props))
	return append(out, signal{api.DBusPath, api.DBusObjectManagerInterface + "." + api.DBusSignalInterfacesRemoved,
		[]any{obj.path, ifaces}})
}

// changedLocked marks obj changed: its properties are recomputed, and
// PropertiesChanged sent, by flushLocked, once per batch of events, so
// that a storm of changes to one device costs one property set and one
// signal per batch rather than per event. Nobody sees obj between the
// two: both run under o.mu in one hold.
func (o *objects) changedLocked(obj *devObject, out []signal) []signal {
	o.dirty[obj] = struct{}{}
	o.managed = nil
	return out
}

// flushLocked emits PropertiesChanged, per interface, for what changed in
// each dirty object since the bus was last told.
func (o *objects) flushLocked(out []signal) []signal {
	list := slices.Collect(maps.Keys(o.dirty))
	slices.SortFunc(list, func(a, b *devObject) int { return strings.Compare(string(a.path), string(b.path)) })
	for _, obj := range list {
		obj.props = o.propsLocked(obj)
		for _, iface := range slices.Sorted(maps.Keys(obj.props)) {
			diff := map[string]dbus.Variant{}
			old := obj.told[iface]
			for k, v := range obj.props[iface] {
				if ov, ok := old[k]; !ok || !sameVariant(ov, v) {
					diff[k] = v
				}
			}
			if len(diff) > 0 {
				out = append(out, signal{obj.path, ifaceProperties + ".PropertiesChanged", []any{iface, diff, []string{}}})
			}
		}
		obj.told = obj.props
	}
	clear(o.dirty)
	return out
}

func sameVariant(a, b dbus.Variant) bool {
	if x, ok := a.Value().([]string); ok {
		y, ok := b.Value().([]string)
		return ok && slices.Equal(x, y)
	}
	return a.Value() == b.Value()
}

// mountChangedLocked keeps the mount points per block device number, and
// refreshes the MountPoints of the block object a mount belongs to.
func (o *objects) mountChangedLocked(old *devObject, ev *event.Event, out []signal) []signal {
	touched := map[string]bool{}
	if old != nil && old.ev.Mount != nil {
		m := old.ev.Mount
		dev := fmt.Sprintf("%d:%d", m.Major, m.Minor)
		delete(o.mounts[dev], m.Point)
		if len(o.mounts[dev]) == 0 {
			delete(o.mounts, dev)
		}
		touched[dev] = true
	}
	if m := ev.Mount; m != nil && exported(ev) {
		dev := fmt.Sprintf("%d:%d", m.Major, m.Minor)
		if o.mounts[dev] == nil {
			o.mounts[dev] = map[string]struct{}{}
		}
		o.mounts[dev][m.Point] = struct{}{}
		touched[dev] = true
	}
	for _, dev := range slices.Sorted(maps.Keys(touched)) {
		if b := o.byKey["block:"+dev]; b != nil {
			// Its MountPoints are now as of this event.
			b.seq, b.time = max(b.seq, ev.Seq), usec(ev)
			out = o.changedLocked(b, out)
		}
	}
	return out
}

// reconcile replaces the object set with a snapshot (at start and after a
// loss): objects that went are removed, new ones added, changed ones
// updated, each with its signal.
func (o *objects) reconcile(epoch uint64, snap []*event.Event) {
	var out []signal
	o.mu.Lock()
	o.epoch = epoch
	seen := map[string]bool{}
	// Mounts first, so that block objects get their mount points.
	ordered := slices.Clone(snap)
	slices.SortStableFunc(ordered, func(a, b *event.Event) int {
		am, bm := a.Source == event.SourceMount, b.Source == event.SourceMount
		switch {
		case am && !bm:
			return -1
		case bm && !am:
			return 1
		}
		return 0
	})
	for _, ev := range ordered {
		if !exported(ev) {
			continue
		}
		seen[objectKey(ev)] = true
		out = o.applyLocked(ev, out)
	}
	for _, obj := range slices.Collect(maps.Values(o.byKey)) {
		if !seen[obj.key] {
			if obj.ev.Mount != nil {
				gone := &event.Event{Source: event.SourceMount, Mount: obj.ev.Mount, StateKey: obj.key, StateRemove: true}
				out = o.mountChangedLocked(obj, gone, out)
			}
			out = o.removeLocked(obj, out)
		}
	}
	out = o.flushLocked(out)
	o.mu.Unlock()
	o.emit(out)
}

func (o *objects) emit(out []signal) {
	for _, s := range out {
		o.sess.conn.Emit(s.path, s.member, s.body...)
	}
}

// propsLocked computes obj's properties, by interface.
func (o *objects) propsLocked(obj *devObject) map[string]map[string]dbus.Variant {
	ev := obj.ev
	name, state, desc := "", api.DBusStatePresent, ""
	out := map[string]map[string]dbus.Variant{}
	switch {
	case ev.Block != nil:
		b := ev.Block
		name = b.Device
		points := o.mountPointsLocked(b.Major, b.Minor)
		if b.BackingFile != "" {
			state = api.DBusStateAttached
		}
		if len(points) > 0 {
			state = api.DBusStateMounted
		}
		desc = describeBlock(b)
		out[api.DBusBlockInterface] = map[string]dbus.Variant{
			"Major":       dbus.MakeVariant(b.Major),
			"Minor":       dbus.MakeVariant(b.Minor),
			"Device":      dbus.MakeVariant(str(b.Device)),
			"Vendor":      dbus.MakeVariant(str(b.Vendor)),
			"Model":       dbus.MakeVariant(str(b.Model)),
			"Serial":      dbus.MakeVariant(str(b.Serial)),
			"WWID":        dbus.MakeVariant(str(b.WWID)),
			"Size":        dbus.MakeVariant(b.Size),
			"Removable":   dbus.MakeVariant(b.Removable),
			"ReadOnly":    dbus.MakeVariant(b.ReadOnly),
			"Partition":   dbus.MakeVariant(uint32(max(b.Partition, 0))),
			"Parent":      dbus.MakeVariant(str(b.Parent)),
			"BackingFile": dbus.MakeVariant(str(b.BackingFile)),
			"Label":       dbus.MakeVariant(str(b.Label)),
			"FSType":      dbus.MakeVariant(str(b.FSType)),
			"MountPoints": dbus.MakeVariant(points),
		}
	case ev.USB != nil:
		u := ev.USB
		name = u.Name
		desc = describeUSB(u)
		out[api.DBusUSBInterface] = map[string]dbus.Variant{
			"Busnum":          dbus.MakeVariant(u.Busnum),
			"Devnum":          dbus.MakeVariant(u.Devnum),
			"VendorID":        dbus.MakeVariant(u.VendorID),
			"ProductID":       dbus.MakeVariant(u.ProductID),
			"Speed":           dbus.MakeVariant(str(u.Speed)),
			"Manufacturer":    dbus.MakeVariant(str(u.Manufacturer)),
			"Product":         dbus.MakeVariant(str(u.Product)),
			"Serial":          dbus.MakeVariant(str(u.Serial)),
			"VendorName":      dbus.MakeVariant(str(u.VendorName)),
			"ProductName":     dbus.MakeVariant(str(u.ProductName)),
			"DeviceClass":     dbus.MakeVariant(u.DeviceClass),
			"DeviceClassName": dbus.MakeVariant(str(u.DeviceClassName)),
			"PortPath":        dbus.MakeVariant(str(u.PortPath)),
		}
	case ev.Mount != nil:
		m := ev.Mount
		name, state = m.Point, api.DBusStateMounted
		desc = fmt.Sprintf("%s on %s (%s)", m.Source, m.Point, m.FSType)
		out[api.DBusMountInterface] = map[string]dbus.Variant{
			"ID":       dbus.MakeVariant(m.ID),
			"ParentID": dbus.MakeVariant(m.ParentID),
			"Point":    dbus.MakeVariant(str(m.Point)),
			"Root":     dbus.MakeVariant(str(m.Root)),
			"Source":   dbus.MakeVariant(str(m.Source)),
			"FSType":   dbus.MakeVariant(str(m.FSType)),
			"Options":  dbus.MakeVariant(str(m.Options)),
			"ReadOnly": dbus.MakeVariant(m.ReadOnly),
			"Major":    dbus.MakeVariant(m.Major),
			"Minor":    dbus.MakeVariant(m.Minor),
		}
	}
	out[api.DBusDeviceInterface] = map[string]dbus.Variant{
		"Source":      dbus.MakeVariant(string(ev.Source)),
		"Name":        dbus.MakeVariant(str(name)),
		"Description": dbus.MakeVariant(str(desc)),
		"State":       dbus.MakeVariant(state),
		"LastEvent":   dbus.MakeVariant(str(obj.last)),
		"Seq":         dbus.MakeVariant(obj.seq),
		"Epoch":       dbus.MakeVariant(o.epoch),
		"Time":        dbus.MakeVariant(obj.time),
		"Errors":      dbus.MakeVariant(obj.errors),
		"LastError":   dbus.MakeVariant(str(obj.lastEr)),
	}
	return out
}

func (o *objects) mountPointsLocked(major, minor uint32) []string {
	set := o.mounts[fmt.Sprintf("%d:%d", major, minor)]
	pts := make([]string, 0, len(set))
	for p := range set {
		pts = append(pts, str(p))
	}
	slices.Sort(pts)
	return pts
}

// describeBlock is the one-line name an applet shows for a block device.
func describeBlock(b *event.BlockFields) string {
	name := strings.TrimSpace(strings.TrimSpace(b.Vendor) + " " + strings.TrimSpace(b.Model))
	if b.BackingFile != "" {
		return fmt.Sprintf("%s (loop device for %s)", b.Device, b.BackingFile)
	}
	if name == "" {
		name = b.Device
	} else {
		name += " (" + b.Device + ")"
	}
	if b.Size > 0 {
		name += ", " + humanSize(b.Size)
	}
	return name
}

// describeUSB names a USB device the way lsusb does: the database names,
// else the device's own strings, with vendor:product.
func describeUSB(u *event.USBFields) string {
	v, p := u.VendorName, u.ProductName
	if v == "" {
		v = u.Manufacturer
	}
	if p == "" {
		p = u.Product
	}
	name := strings.TrimSpace(v + " " + p)
	if name == "" {
		name = "USB device " + u.Name
	}
	return fmt.Sprintf("%s (%04x:%04x)", name, u.VendorID, u.ProductID)
}

func humanSize(n uint64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// managedLocked returns the GetManagedObjects reply, built once per
// change of the object set and shared (read-only) by every call.
func (o *objects) managedLocked() map[dbus.ObjectPath]map[string]map[string]dbus.Variant {
	if o.managed == nil {
		m := make(map[dbus.ObjectPath]map[string]map[string]dbus.Variant, len(o.byPath))
		for p, obj := range o.byPath {
			m[p] = obj.props
		}
		o.managed = m
	}
	return o.managed
}

// getManagedObjects implements ObjectManager.GetManagedObjects (manual
// reply). The caller is a connection of the subscription core (admitted
// against the per-user connection limits), and a user's calls in flight
// are bounded by Limits.MaxConnectionsPerUser (administrators are not),
// so a flood from one unprivileged peer is refused with Error.Limit
// rather than queued; the reply itself is built once per change of the
// object set.
func (sess *session) getManagedObjects(msg dbus.Message) *dbus.Error {
	if !sess.enter() {
		sess.reply(&msg, dbusErr(api.DBusErrorFailed, "service is shutting down"))
		return nil
	}
	defer sess.leave()
	own, e := sess.ownerFor(msgSender(msg))
	if e != nil {
		sess.reply(&msg, e)
		return nil
	}
	o := sess.objs
	uid, admin := own.cn.Cred().UID, own.cn.Admin()
	limit := sess.svc.cfg.Core.Limits().MaxConnectionsPerUser
	o.mu.Lock()
	if !admin && o.flight[uid] >= limit {
		o.refused++
		o.mu.Unlock()
		sess.reply(&msg, dbusErr(api.DBusErrorLimit, "too many GetManagedObjects calls in flight for uid %d (limit %d, connections_per_user)", uid, limit))
		return nil
	}
	o.flight[uid]++
	o.peak = max(o.peak, o.flight[uid])
	reply := o.managedLocked()
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		if o.flight[uid]--; o.flight[uid] <= 0 {
			delete(o.flight, uid)
		}
		o.mu.Unlock()
	}()
	sess.reply(&msg, nil, reply)
	return nil
}

// lookupObject returns the device object at path, or UnknownObject.
func (sess *session) lookupObject(path dbus.ObjectPath) (map[string]map[string]dbus.Variant, *dbus.Error) {
	o := sess.objs
	o.mu.Lock()
	defer o.mu.Unlock()
	obj := o.byPath[path]
	if obj == nil {
		return nil, dbusErr(errUnknownObject, "no device object %s (it may have gone)", path)
	}
	return obj.props, nil
}

func (sess *session) devGet(msg dbus.Message, iface, name string) (dbus.Variant, *dbus.Error) {
	props, e := sess.lookupObject(msgPath(msg))
	if e != nil {
		return dbus.Variant{}, e
	}
	m, ok := props[iface]
	if !ok {
		return dbus.Variant{}, dbusErr(errUnknownIface, "no interface %q here", iface)
	}
	v, ok := m[name]
	if !ok {
		return dbus.Variant{}, dbusErr(errUnknownProperty, "no property %q", name)
	}
	return v, nil
}

func (sess *session) devGetAll(msg dbus.Message, iface string) (map[string]dbus.Variant, *dbus.Error) {
	props, e := sess.lookupObject(msgPath(msg))
	if e != nil {
		return nil, e
	}
	if m, ok := props[iface]; ok {
		return m, nil
	}
	return map[string]dbus.Variant{}, nil
}

func (sess *session) devSet(msg dbus.Message, iface, name string, _ dbus.Variant) *dbus.Error {
	if _, e := sess.lookupObject(msgPath(msg)); e != nil {
		return e
	}
	return propSet(iface, name, dbus.Variant{})
}

// devIntrospect describes a device object, or lists the children of a
// directory on the way to one (…/devices, …/devices/block).
func (sess *session) devIntrospect(msg dbus.Message) (string, *dbus.Error) {
	path := msgPath(msg)
	o := sess.objs
	o.mu.Lock()
	obj := o.byPath[path]
	var kids []string
	if obj == nil {
		prefix := string(path) + "/"
		seen := map[string]bool{}
		for p := range o.byPath {
			if rest, ok := strings.CutPrefix(string(p), prefix); ok {
				kid, _, _ := strings.Cut(rest, "/")
				if !seen[kid] {
					seen[kid] = true
					kids = append(kids, kid)
				}
			}
		}
	}
	var ifaces []string
	if obj != nil {
		ifaces = slices.Sorted(maps.Keys(obj.props))
	}
	o.mu.Unlock()
	if obj != nil {
		return deviceXML(ifaces), nil
	}
	if len(kids) == 0 && path != api.DBusDevicesPrefix {
		return "", dbusErr(errUnknownObject, "no device object %s (it may have gone)", path)
	}
	slices.Sort(kids)
	return parentXML(kids), nil
}

// ObjectStats are the device-object exporter's counters (Health).
type ObjectStats struct {
	Objects int
	// PeakInFlight is the most GetManagedObjects calls of one user that
	// were in flight at once; Refused counts calls refused for the
	// per-user bound.
	PeakInFlight int
	Refused      uint64
	// Resyncs counts new snapshots taken after the exporter's own
	// subscription lost events.
	Resyncs uint64
	// Err says why nothing is exported, when the policy lets every
	// local user see none of the device sources.
	Err string
}

func (o *objects) stats() ObjectStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return ObjectStats{Objects: len(o.byPath), PeakInFlight: o.peak, Refused: o.refused, Resyncs: o.resyncs, Err: o.err}
}
