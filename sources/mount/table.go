package mount

import (
	"slices"
	"strings"

	"github.com/notifyd/notifyd/event"
)

// change is one difference between two states of the table.
type change struct {
	sub string // event.Mount* subtype
	m   Mount  // the mount after (before, for unmount and move-from)
	old Mount  // the mount before (move-to, readonly, setattr)
}

// sameFS reports whether a and b are the same mount as far as a diff of
// two tables can tell (an id that was freed and reused names another
// mount): same filesystem, same root within it.
func sameFS(a, b Mount) bool {
	return a.Major == b.Major && a.Minor == b.Minor && a.Root == b.Root && a.FSType == b.FSType && a.Source == b.Source
}

// attrChange returns the change of a mount's attributes from old to cur:
// readonly when read-only flipped, setattr when other options or the
// propagation changed, "" when nothing did.
func attrChange(old, cur Mount) string {
	switch {
	case old.ReadOnly != cur.ReadOnly:
		return event.MountReadonly
	case old.Options != cur.Options || old.SuperOptions != cur.SuperOptions || old.Propagation != cur.Propagation:
		return event.MountSetattr
	}
	return ""
}

// reordered tells a mount id that /proc/PID/mountinfo reused for a new
// mount of the same filesystem at another place from a moved mount. The
// kernel lists a namespace's mounts in the order they were attached (by
// unique id since Linux 6.8, in list order before), and a move keeps the
// mount's place in that order, while a new mount comes after every mount
// that was there before it. So if the id's place relative to the mounts
// that stayed where they were changed, it is a new mount.
func reordered(old, cur map[uint64]Mount, id uint64) bool {
	o, c := old[id], cur[id]
	for k, ok := range old {
		if k == id {
			continue
		}
		kc, there := cur[k]
		if !there || kc.Point != ok.Point || !sameFS(ok, kc) {
			continue
		}
		if (ok.pos > o.pos) != (kc.pos > c.pos) {
			return true
		}
	}
	return false
}

// diff returns the changes from old to cur, in an order a kernel could
// have made them: unmounts (deepest first), moves, new mounts (parents
// first), then attribute changes.
func diff(old, cur map[uint64]Mount) []change {
	var gone, added, moved, attrs []change
	for id, o := range old {
		c, ok := cur[id]
		switch {
		case !ok:
			gone = append(gone, change{sub: event.MountUnmount, m: o})
		case !sameFS(o, c):
			gone = append(gone, change{sub: event.MountUnmount, m: o})
			added = append(added, change{sub: event.MountNew, m: c})
		case (o.Point != c.Point || o.ParentID != c.ParentID) && reordered(old, cur, id):
			gone = append(gone, change{sub: event.MountUnmount, m: o})
			added = append(added, change{sub: event.MountNew, m: c})
		case o.Point != c.Point || o.ParentID != c.ParentID:
			moved = append(moved, change{sub: event.MountMoveFrom, m: o}, change{sub: event.MountMoveTo, m: c, old: o})
			if sub := attrChange(o, c); sub != "" {
				attrs = append(attrs, change{sub: sub, m: c, old: o})
			}
		default:
			if sub := attrChange(o, c); sub != "" {
				attrs = append(attrs, change{sub: sub, m: c, old: o})
			}
		}
	}
	for id, c := range cur {
		if _, ok := old[id]; !ok {
			added = append(added, change{sub: event.MountNew, m: c})
		}
	}
	byDepth := func(desc bool) func(a, b change) int {
		return func(a, b change) int {
			da, db := depth(a.m.Point), depth(b.m.Point)
			if da != db {
				if desc {
					return db - da
				}
				return da - db
			}
			return cmpID(a.m.ID, b.m.ID)
		}
	}
	slices.SortFunc(gone, byDepth(true))
	slices.SortStableFunc(moved, func(a, b change) int { return cmpID(a.m.ID, b.m.ID) })
	slices.SortFunc(added, byDepth(false))
	slices.SortFunc(attrs, func(a, b change) int { return cmpID(a.m.ID, b.m.ID) })
	return slices.Concat(gone, moved, added, attrs)
}

func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

func cmpID(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fields returns m as the event's typed fields.
func (m Mount) fields() *event.MountFields {
	return &event.MountFields{ID: m.ID, ParentID: m.ParentID, MountinfoID: m.MountinfoID, Major: m.Major, Minor: m.Minor,
		Root: m.Root, Point: m.Point, Source: m.Source, FSType: m.FSType, Options: m.Options,
		SuperOptions: m.SuperOptions, Propagation: m.Propagation, ReadOnly: m.ReadOnly}
}

// props are the attributes a transport with a fixed signature (D-Bus
// Event, version 1) or a generic view (the dashboard) shows of a mount
// event: the row in /proc/PID/mountinfo's terms.
func (m Mount) props() map[string]string {
	p := map[string]string{"MOUNT_ID": u64(m.ID), "MOUNT_POINT": m.Point, "FSTYPE": m.FSType, "SOURCE": m.Source,
		"OPTIONS": m.Options}
	set := func(k, v string) {
		if v != "" {
			p[k] = v
		}
	}
	if m.ParentID != 0 {
		p["PARENT_ID"] = u64(m.ParentID)
	}
	if m.MountinfoID != 0 {
		p["MOUNTINFO_ID"] = u64(uint64(m.MountinfoID))
	}
	if m.Major != 0 || m.Minor != 0 {
		p["MAJ_MIN"] = u64(uint64(m.Major)) + ":" + u64(uint64(m.Minor))
	}
	set("ROOT", m.Root)
	set("SUPER_OPTIONS", m.SuperOptions)
	set("PROPAGATION", m.Propagation)
	for k, v := range p {
		if v == "" {
			delete(p, k)
		}
	}
	return p
}
