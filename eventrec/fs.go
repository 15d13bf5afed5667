package eventrec

import (
	"fmt"
	"strconv"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/record"
)

// MountStateKey is the StateKey of events about mount id.
func MountStateKey(id uint64) string { return "mount:" + strconv.FormatUint(id, 10) }

// fillMount maps a mount record: for new-mount, unmount, expiry and the
// moves the mount is auxiliary_mount and its parent triggered_on; for
// readonly and setattr the mount is triggered_on.
func fillMount(ev *event.Event, r *record.Mount) {
	sub := r.Subtype()
	ev.Source, ev.Subtype = event.SourceMount, sub.String()
	m := &event.MountFields{ID: r.TriggeredOn, ReadOnly: r.Hdr.Info&record.MountIsNowRO != 0}
	if sub.HasAux() {
		m.ID, m.ParentID = r.AuxiliaryMount, r.TriggeredOn
	}
	ev.Mount = m
	if sub != record.MountMoveFrom {
		ev.StateKey = MountStateKey(m.ID)
		ev.StateRemove = sub == record.MountUnmount || sub == record.MountExpiry
	}
}

// mountRecord encodes a mount event; a snapshot item is the new-mount
// record that would have announced the mount.
func mountRecord(ev *event.Event, snap bool) ([]byte, error) {
	sub, ok := record.ParseMountSubtype(ev.Subtype)
	if snap {
		sub, ok = record.MountNew, true
	}
	if !ok || ev.Mount == nil {
		return nil, fmt.Errorf("event to record: mount event %q without mount fields or known subtype", ev.Subtype)
	}
	m := ev.Mount
	return record.EncodeMount(sub, m.ID, m.ParentID, m.ReadOnly), nil
}

// fillSuperblock maps a superblock record. sb_id is the kernel-internal
// dev_t of the filesystem's device (MkDev), error_number the errno and
// error_cookie the kernel's error count.
func fillSuperblock(ev *event.Event, r *record.Superblock) {
	ev.Source, ev.Subtype = event.SourceSuperblock, r.Subtype().String()
	ev.Superblock = &event.SuperblockFields{Major: r.Major(), Minor: r.Minor(),
		Errno: r.ErrorNumber, ErrorCount: r.ErrorCookie}
}

func superblockRecord(ev *event.Event) ([]byte, error) {
	sub, ok := record.ParseSuperblockSubtype(ev.Subtype)
	if !ok || ev.Superblock == nil {
		return nil, fmt.Errorf("event to record: superblock event %q without superblock fields or known subtype", ev.Subtype)
	}
	s := ev.Superblock
	r := &record.Superblock{Hdr: record.Header{Subtype: uint8(sub)}, SBID: record.MkDev(s.Major, s.Minor)}
	switch sub {
	case record.SuperblockError:
		r.ErrorNumber, r.ErrorCookie = s.Errno, s.ErrorCount
	case record.SuperblockReadonly:
		r.Hdr.Info |= record.SuperblockIsNowRO
	}
	return record.Encode(r)
}
