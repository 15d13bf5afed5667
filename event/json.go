package event

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// FormatEpoch renders an epoch as the 16-digit hex string used on every wire.
func FormatEpoch(e uint64) string { return fmt.Sprintf("%016x", e) }

// ParseEpoch parses FormatEpoch's form.
func ParseEpoch(s string) (uint64, error) {
	if len(s) == 0 || len(s) > 16 {
		return 0, fmt.Errorf("parse epoch %q: want 1 to 16 hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("parse epoch %q: want hex digits", s)
	}
	return v, nil
}

// jsonEvent is the wire form. Field names are part of the protocol.
type jsonEvent struct {
	Type      string            `json:"type"` // "event", "loss" or "snapshot"
	Host      string            `json:"host,omitempty"`
	Epoch     string            `json:"epoch,omitempty"`
	Seq       uint64            `json:"seq"`
	Time      string            `json:"time"`
	Source    Source            `json:"source"`
	Subtype   string            `json:"subtype"`
	Tag       *int              `json:"tag,omitempty"`
	Origin    Origin            `json:"origin"`
	Via       string            `json:"via,omitempty"`
	Coalesced uint64            `json:"coalesced,omitempty"`
	Key       *jsonKey          `json:"key,omitempty"`
	Block     *jsonBlock        `json:"block,omitempty"`
	USB       *jsonUSB          `json:"usb,omitempty"`
	Mount     *jsonMount        `json:"mount,omitempty"`
	SB        *jsonSuperblock   `json:"superblock,omitempty"`
	Loss      *jsonLoss         `json:"loss,omitempty"`
	Props     map[string]string `json:"props,omitempty"`
	Raw       string            `json:"raw,omitempty"` // hex
	StateKey  string            `json:"object,omitempty"`
	Removed   bool              `json:"removed,omitempty"`
}

type jsonKey struct {
	ID          int32  `json:"id"`
	Aux         int32  `json:"aux"`
	Type        string `json:"type,omitempty"`
	Description string `json:"description,omitempty"`
	UID         *int64 `json:"uid,omitempty"`
	GID         *int64 `json:"gid,omitempty"`
	Perm        string `json:"perm,omitempty"`
}

type jsonBlock struct {
	Dev    string  `json:"dev"` // "major:minor"
	Major  uint32  `json:"major"`
	Minor  uint32  `json:"minor"`
	Device string  `json:"device,omitempty"`
	Sector *uint64 `json:"sector,omitempty"`
	// Identity (docs/sources.md, "Device identity").
	Vendor      string `json:"vendor,omitempty"`
	Model       string `json:"model,omitempty"`
	Serial      string `json:"serial,omitempty"`
	WWID        string `json:"wwid,omitempty"`
	Size        uint64 `json:"size_bytes,omitempty"`
	Removable   bool   `json:"removable,omitempty"`
	ReadOnly    bool   `json:"read_only,omitempty"`
	Partition   int    `json:"partition,omitempty"`
	Parent      string `json:"parent,omitempty"`
	BackingFile string `json:"backing_file,omitempty"`
	Label       string `json:"label,omitempty"`
	FSType      string `json:"fs_type,omitempty"`
}

type jsonUSB struct {
	Name    string `json:"name"`
	Busnum  uint16 `json:"busnum,omitempty"`
	Devnum  uint16 `json:"devnum,omitempty"`
	Vendor  string `json:"vendor,omitempty"`  // 4 hex digits
	Product string `json:"product,omitempty"` // 4 hex digits
	Speed   string `json:"speed,omitempty"`
	Driver  string `json:"driver,omitempty"`
	Error   uint32 `json:"error,omitempty"`
	Port    uint16 `json:"port,omitempty"`
	Class   string `json:"class,omitempty"`
	// Identity (docs/sources.md, "Device identity"). "product" is taken
	// by the id: the device's own product string is product_string.
	Manufacturer    string `json:"manufacturer,omitempty"`
	ProductString   string `json:"product_string,omitempty"`
	Serial          string `json:"serial,omitempty"`
	VendorName      string `json:"vendor_name,omitempty"`
	ProductName     string `json:"product_name,omitempty"`
	DeviceClass     uint8  `json:"device_class,omitempty"`
	DeviceClassName string `json:"device_class_name,omitempty"`
	PortPath        string `json:"port_path,omitempty"`
}

type jsonLoss struct {
	Count     *uint64 `json:"count"` // null when unknown
	Estimated bool    `json:"estimated,omitempty"`
	FromSeq   uint64  `json:"from_seq,omitempty"`
	ToSeq     uint64  `json:"to_seq,omitempty"`
	Reason    string  `json:"reason,omitempty"`
}

// MarshalJSON encodes e in the shared wire form.
func (e *Event) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(make([]byte, 0, 256+len(e.Raw)*2)), nil
}

// marshalReflect is the reference encoder: the wire form is defined as
// encoding/json's encoding of jsonEvent. AppendJSON produces the same
// bytes without reflection (tested, fuzzed).
func (e *Event) marshalReflect() ([]byte, error) {
	j := jsonEvent{
		Type:     "event",
		Host:     e.Host,
		Seq:      e.Seq,
		Source:   e.Source,
		Subtype:  e.Subtype,
		Origin:   e.Origin,
		Via:      e.Via,
		Props:    e.Props,
		StateKey: e.StateKey,
		Removed:  e.StateRemove,
	}
	if e.Epoch != 0 {
		j.Epoch = FormatEpoch(e.Epoch)
	}
	if e.Coalesced > 1 {
		j.Coalesced = e.Coalesced
	}
	if !e.Time.IsZero() {
		j.Time = e.Time.UTC().Format(time.RFC3339Nano)
	}
	if e.Snapshot {
		j.Type = "snapshot"
	}
	if e.Tag != NoTag {
		t := e.Tag
		j.Tag = &t
	}
	if k := e.Key; k != nil {
		jk := &jsonKey{ID: k.ID, Aux: k.Aux}
		if k.Described {
			uid, gid := int64(k.UID), int64(k.GID)
			if k.UID == ^uint32(0) {
				uid = -1
			}
			if k.GID == ^uint32(0) {
				gid = -1
			}
			jk.Type, jk.Description, jk.UID, jk.GID = k.Type, k.Description, &uid, &gid
			jk.Perm = fmt.Sprintf("%08x", k.Perm)
		}
		j.Key = jk
	}
	if b := e.Block; b != nil {
		jb := &jsonBlock{Dev: fmt.Sprintf("%d:%d", b.Major, b.Minor), Major: b.Major, Minor: b.Minor, Device: b.Device,
			Vendor: b.Vendor, Model: b.Model, Serial: b.Serial, WWID: b.WWID, Size: b.Size, Removable: b.Removable,
			ReadOnly: b.ReadOnly, Partition: b.Partition, Parent: b.Parent, BackingFile: b.BackingFile, Label: b.Label,
			FSType: b.FSType}
		if b.HasSector {
			s := b.Sector
			jb.Sector = &s
		}
		j.Block = jb
	}
	if u := e.USB; u != nil {
		ju := &jsonUSB{Name: u.Name, Busnum: u.Busnum, Devnum: u.Devnum, Speed: u.Speed, Driver: u.Driver, Error: u.Error,
			Port: u.Port, Class: u.Class, Manufacturer: u.Manufacturer, ProductString: u.Product, Serial: u.Serial,
			VendorName: u.VendorName, ProductName: u.ProductName, DeviceClass: u.DeviceClass,
			DeviceClassName: u.DeviceClassName, PortPath: u.PortPath}
		if u.VendorID != 0 || u.ProductID != 0 {
			ju.Vendor, ju.Product = fmt.Sprintf("%04x", u.VendorID), fmt.Sprintf("%04x", u.ProductID)
		}
		j.USB = ju
	}
	j.Mount, j.SB = e.jsonFS()
	if l := e.Loss; l != nil {
		j.Type = "loss"
		jl := &jsonLoss{Estimated: l.Estimated, FromSeq: l.FromSeq, ToSeq: l.ToSeq, Reason: l.Reason}
		if l.Known() {
			c := l.Count
			jl.Count = &c
		}
		j.Loss = jl
	}
	if len(e.Raw) > 0 {
		j.Raw = hex.EncodeToString(e.Raw)
	}
	return json.Marshal(j)
}

// JSON returns e's wire form, encoding it once and caching the result:
// an event sent to a thousand subscribers is encoded once. The returned
// slice must not be modified. Call it only after the event is published
// (stamped), since the cache is not invalidated.
func (e *Event) JSON() []byte { return e.Encoded(EncodingJSON, marshalJSON) }

func marshalJSON(e *Event) []byte {
	b, err := e.MarshalJSON()
	if err != nil {
		// Every field is a plain value: this cannot happen.
		panic("event: marshal: " + err.Error())
	}
	return b
}

// UnmarshalJSON decodes the wire form (for clients such as notifyctl).
func (e *Event) UnmarshalJSON(data []byte) error {
	var j jsonEvent
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("decode event: %w", err)
	}
	*e = Event{Seq: j.Seq, Source: j.Source, Subtype: j.Subtype, Origin: j.Origin, Props: j.Props, Tag: NoTag,
		StateKey: j.StateKey, StateRemove: j.Removed, Snapshot: j.Type == "snapshot", Host: j.Host, Via: j.Via}
	if j.Coalesced > 1 {
		e.Coalesced = j.Coalesced
	}
	if j.Epoch != "" {
		ep, err := ParseEpoch(j.Epoch)
		if err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		e.Epoch = ep
	}
	if j.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, j.Time)
		if err != nil {
			return fmt.Errorf("decode event: time: %w", err)
		}
		e.Time = t
	}
	if j.Tag != nil {
		e.Tag = *j.Tag
	}
	if k := j.Key; k != nil {
		e.Key = &KeyFields{ID: k.ID, Aux: k.Aux, Type: k.Type, Description: k.Description}
		if k.UID != nil && k.GID != nil {
			e.Key.Described = true
			e.Key.UID, e.Key.GID = uint32(*k.UID), uint32(*k.GID)
			if p, err := strconv.ParseUint(k.Perm, 16, 32); err == nil {
				e.Key.Perm = uint32(p)
			}
		}
	}
	if b := j.Block; b != nil {
		e.Block = &BlockFields{Major: b.Major, Minor: b.Minor, Device: b.Device,
			Vendor: b.Vendor, Model: b.Model, Serial: b.Serial, WWID: b.WWID, Size: b.Size, Removable: b.Removable,
			ReadOnly: b.ReadOnly, Partition: b.Partition, Parent: b.Parent, BackingFile: b.BackingFile, Label: b.Label,
			FSType: b.FSType}
		if b.Sector != nil {
			e.Block.Sector, e.Block.HasSector = *b.Sector, true
		}
	}
	if u := j.USB; u != nil {
		e.USB = &USBFields{Name: u.Name, Busnum: u.Busnum, Devnum: u.Devnum, Speed: u.Speed, Driver: u.Driver, Error: u.Error,
			Port: u.Port, Class: u.Class, Manufacturer: u.Manufacturer, Product: u.ProductString, Serial: u.Serial,
			VendorName: u.VendorName, ProductName: u.ProductName, DeviceClass: u.DeviceClass,
			DeviceClassName: u.DeviceClassName, PortPath: u.PortPath}
		if v, err := strconv.ParseUint(u.Vendor, 16, 16); err == nil {
			e.USB.VendorID = uint16(v)
		}
		if p, err := strconv.ParseUint(u.Product, 16, 16); err == nil {
			e.USB.ProductID = uint16(p)
		}
	}
	e.fromJSONFS(j.Mount, j.SB)
	if l := j.Loss; l != nil {
		e.Loss = &Loss{Source: j.Source, Origin: j.Origin, Count: CountUnknown, Estimated: l.Estimated,
			FromSeq: l.FromSeq, ToSeq: l.ToSeq, Tag: e.Tag, Reason: l.Reason}
		if l.Count != nil {
			e.Loss.Count = *l.Count
		}
	}
	if j.Raw != "" {
		raw, err := hex.DecodeString(strings.TrimSpace(j.Raw))
		if err != nil {
			return fmt.Errorf("decode event: raw: %w", err)
		}
		e.Raw = raw
	}
	return nil
}
