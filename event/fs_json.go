package event

import (
	"strconv"
	"strings"
)

// The wire forms of MountFields and SuperblockFields (docs/websocket.md).
// jsonEvent's encoding by encoding/json is the definition; appendFSJSON
// writes the same bytes without reflection.

type jsonMount struct {
	ID           uint64 `json:"id"`
	Parent       uint64 `json:"parent,omitempty"`
	MountinfoID  uint32 `json:"mountinfo_id,omitempty"`
	Dev          string `json:"dev,omitempty"` // "major:minor", absent when unknown
	Root         string `json:"root,omitempty"`
	Point        string `json:"point,omitempty"`
	OldPoint     string `json:"old_point,omitempty"`
	Source       string `json:"source,omitempty"`
	FSType       string `json:"fstype,omitempty"`
	Options      string `json:"options,omitempty"`
	OldOptions   string `json:"old_options,omitempty"`
	SuperOptions string `json:"super_options,omitempty"`
	Propagation  string `json:"propagation,omitempty"`
	ReadOnly     bool   `json:"readonly,omitempty"`
	PrivateUID   *int64 `json:"private_uid,omitempty"` // -1: several users' areas
	PID          uint32 `json:"pid,omitempty"`
}

type jsonSuperblock struct {
	Dev        string `json:"dev"` // "major:minor"
	Major      uint32 `json:"major"`
	Minor      uint32 `json:"minor"`
	Device     string `json:"device,omitempty"`
	FSType     string `json:"fstype,omitempty"`
	Point      string `json:"point,omitempty"`
	Errno      uint32 `json:"errno,omitempty"`
	ErrorCount uint32 `json:"error_count,omitempty"`
	Inode      uint64 `json:"inode,omitempty"`
}

func devString(major, minor uint32) string { return string(appendDev(nil, major, minor)) }

func appendDev(b []byte, major, minor uint32) []byte {
	b = strconv.AppendUint(b, uint64(major), 10)
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(minor), 10)
}

// jsonFS builds the reference wire structs of e's mount and superblock
// fields.
func (e *Event) jsonFS() (*jsonMount, *jsonSuperblock) {
	var jm *jsonMount
	var js *jsonSuperblock
	if m := e.Mount; m != nil {
		jm = &jsonMount{ID: m.ID, Parent: m.ParentID, MountinfoID: m.MountinfoID, Root: m.Root, Point: m.Point,
			OldPoint: m.OldPoint, Source: m.Source, FSType: m.FSType, Options: m.Options, OldOptions: m.OldOptions,
			SuperOptions: m.SuperOptions, Propagation: m.Propagation, ReadOnly: m.ReadOnly, PID: m.PID}
		if m.Major != 0 || m.Minor != 0 {
			jm.Dev = devString(m.Major, m.Minor)
		}
		if m.Private {
			u := int64(m.UID)
			if m.UID == ^uint32(0) {
				u = -1
			}
			jm.PrivateUID = &u
		}
	}
	if s := e.Superblock; s != nil {
		js = &jsonSuperblock{Dev: devString(s.Major, s.Minor), Major: s.Major, Minor: s.Minor, Device: s.Device,
			FSType: s.FSType, Point: s.Point, Errno: s.Errno, ErrorCount: s.ErrorCount, Inode: s.Inode}
	}
	return jm, js
}

// fromJSONFS sets e's mount and superblock fields from their wire forms.
func (e *Event) fromJSONFS(jm *jsonMount, js *jsonSuperblock) {
	if jm != nil {
		m := &MountFields{ID: jm.ID, ParentID: jm.Parent, MountinfoID: jm.MountinfoID, Root: jm.Root, Point: jm.Point,
			OldPoint: jm.OldPoint, Source: jm.Source, FSType: jm.FSType, Options: jm.Options, OldOptions: jm.OldOptions,
			SuperOptions: jm.SuperOptions, Propagation: jm.Propagation, ReadOnly: jm.ReadOnly, PID: jm.PID}
		if a, b, ok := strings.Cut(jm.Dev, ":"); ok {
			ma, err1 := strconv.ParseUint(a, 10, 32)
			mi, err2 := strconv.ParseUint(b, 10, 32)
			if err1 == nil && err2 == nil {
				m.Major, m.Minor = uint32(ma), uint32(mi)
			}
		}
		if u := jm.PrivateUID; u != nil {
			m.Private, m.UID = true, uint32(*u)
		}
		e.Mount = m
	}
	if js != nil {
		e.Superblock = &SuperblockFields{Major: js.Major, Minor: js.Minor, Device: js.Device, FSType: js.FSType,
			Point: js.Point, Errno: js.Errno, ErrorCount: js.ErrorCount, Inode: js.Inode}
	}
}

// appendFSJSON appends the "mount" and "superblock" members of e, as
// encoding/json would write jsonFS's structs.
func (e *Event) appendFSJSON(b []byte) []byte {
	str := func(name, v string) {
		if v != "" {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = appendString(b, v)
		}
	}
	num := func(name string, v uint64) {
		if v != 0 {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = strconv.AppendUint(b, v, 10)
		}
	}
	if m := e.Mount; m != nil {
		b = append(b, `,"mount":{"id":`...)
		b = strconv.AppendUint(b, m.ID, 10)
		num("parent", m.ParentID)
		num("mountinfo_id", uint64(m.MountinfoID))
		if m.Major != 0 || m.Minor != 0 {
			b = append(b, `,"dev":"`...)
			b = appendDev(b, m.Major, m.Minor)
			b = append(b, '"')
		}
		str("root", m.Root)
		str("point", m.Point)
		str("old_point", m.OldPoint)
		str("source", m.Source)
		str("fstype", m.FSType)
		str("options", m.Options)
		str("old_options", m.OldOptions)
		str("super_options", m.SuperOptions)
		str("propagation", m.Propagation)
		if m.ReadOnly {
			b = append(b, `,"readonly":true`...)
		}
		if m.Private {
			b = append(b, `,"private_uid":`...)
			if m.UID == ^uint32(0) {
				b = append(b, "-1"...)
			} else {
				b = strconv.AppendUint(b, uint64(m.UID), 10)
			}
		}
		num("pid", uint64(m.PID))
		b = append(b, '}')
	}
	if s := e.Superblock; s != nil {
		b = append(b, `,"superblock":{"dev":"`...)
		b = appendDev(b, s.Major, s.Minor)
		b = append(b, `","major":`...)
		b = strconv.AppendUint(b, uint64(s.Major), 10)
		b = append(b, `,"minor":`...)
		b = strconv.AppendUint(b, uint64(s.Minor), 10)
		str("device", s.Device)
		str("fstype", s.FSType)
		str("point", s.Point)
		num("errno", uint64(s.Errno))
		num("error_count", uint64(s.ErrorCount))
		num("inode", s.Inode)
		b = append(b, '}')
	}
	return b
}
