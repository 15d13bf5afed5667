package filter

import (
	"sort"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/record"
)

// KernelEntry is one rule of a notification queue's kernel filter:
// record.FilterEntry, the mirror of struct watch_notification_type_filter.
// Only Subtypes[0] (subtypes 0..31) is honoured by the kernel.
type KernelEntry = record.FilterEntry

// MaxKernelEntries is the kernel's limit on filter entries per queue.
const MaxKernelEntries = record.MaxFilters

// keySubtypes are the names of enum key_notification_subtype in order,
// from record's one table.
var keySubtypes = func() (names [record.NumKeySubtypes]string) {
	for i := range names {
		names[i] = record.KeySubtype(i).String()
	}
	return names
}()

// allSubtypes passes every subtype the kernel can filter on.
const allSubtypes = ^uint32(0)

// Kernel returns the filter for a key notification queue that lets through
// every key notification at least one of fs could match, and as little
// else as it can express: the union of the filters' needs over types 0
// (meta) and 1 (key) only — never another type (CVE-2022-0995) — in at
// most MaxKernelEntries entries. A nil or empty *Filter in fs wants
// everything. With no filters at all only the meta entry is returned, so
// the kernel drops every key notification: a caller that keeps history
// for subscribers yet to come must pass a nil filter for it.
//
// Key notifications are judged on what the kernel's filter can see, the
// subtype and the watch tag; conditions on other fields count as possibly
// true. Removal and loss records bypass kernel filters anyway (the kernel
// posts them without filtering); the meta entry is there so that a filter
// never needs to depend on that.
func Kernel(fs []*Filter) []KernelEntry {
	meta := KernelEntry{Type: record.TypeMeta}
	meta.Subtypes[0] = allSubtypes
	out := []KernelEntry{meta}

	// Tags named by any filter; every other tag is judged the same way.
	tagSet := map[int]bool{}
	for _, f := range fs {
		if f != nil && f.root != nil {
			f.root.tags(tagSet)
		}
	}
	tags := make([]int, 0, len(tagSet))
	for t := range tagSet {
		tags = append(tags, t)
	}
	sort.Ints(tags)
	other := -1 // a tag no filter names
	for t := 0; t <= 255; t++ {
		if !tagSet[t] {
			other = t
			break
		}
	}

	var base uint32 // subtypes wanted for unnamed tags
	perTag := make([]uint32, len(tags))
	for _, f := range fs {
		if f == nil || f.root == nil {
			base = allSubtypes
			break
		}
		if other >= 0 {
			base |= keyMask(f.root, other)
		}
		for i, t := range tags {
			perTag[i] |= keyMask(f.root, t)
		}
	}
	if base == allSubtypes {
		e := KernelEntry{Type: record.TypeKey}
		e.Subtypes[0] = allSubtypes
		return append(out, e)
	}
	var union uint32 = base
	var extra []KernelEntry
	for i, t := range tags {
		union |= perTag[i]
		if perTag[i]&^base == 0 {
			continue
		}
		e := KernelEntry{Type: record.TypeKey, InfoFilter: uint32(t) << record.InfoIDShift, InfoMask: record.InfoID}
		e.Subtypes[0] = perTag[i]
		extra = append(extra, e)
	}
	if base != 0 {
		e := KernelEntry{Type: record.TypeKey}
		e.Subtypes[0] = base
		out = append(out, e)
	}
	if len(out)+len(extra) > MaxKernelEntries {
		e := KernelEntry{Type: record.TypeKey}
		e.Subtypes[0] = union
		return append(out[:1], e)
	}
	return append(out, extra...)
}

// keyMask returns the subtype bitmap of key notifications with watch tag
// tag that n could match. Bits 8..31 (subtypes this version does not know
// by name) are set when n could match a key event of unknown subtype.
func keyMask(n *node, tag int) uint32 {
	p := partial{source: event.SourceKey, hasSource: true, origin: event.OriginWatchQueue, hasOrigin: true, tag: tag, hasTag: true}
	var m uint32
	for i, st := range keySubtypes {
		p.subtype, p.hasSubtype = st, true
		if n.evalPartial(&p) != tFalse {
			m |= 1 << i
		}
	}
	// A subtype this version has no name for equals no name a filter can
	// write, but matches "!=" and globs such as "*".
	p.subtype = "\x00unnamed"
	if n.evalPartial(&p) != tFalse {
		m |= allSubtypes &^ (1<<record.NumKeySubtypes - 1)
	}
	return m
}

// tags adds the watch tags n compares with.
func (n *node) tags(set map[int]bool) {
	if n.op == opCmp {
		if n.cmp.field.id == fTag {
			for _, l := range n.cmp.lits {
				set[int(l.num)] = true
			}
		}
		return
	}
	for _, k := range n.kids {
		k.tags(set)
	}
}

// knownSources are the sources a filter can name.
var knownSources = [...]event.Source{event.SourceKey, event.SourceBlock, event.SourceUSB, event.SourceMount, event.SourceSuperblock, event.SourceMeta}

// Sources returns the sources whose events f could match, judging by the
// source alone (other conditions count as possibly true), in the order
// key, block, usb, mount, superblock, meta. The daemon uses it to ask the policy's Watch
// hook about each source a subscription names.
func (f *Filter) Sources() []event.Source {
	var out []event.Source
	for _, s := range knownSources {
		if f == nil || f.root == nil {
			out = append(out, s)
			continue
		}
		p := partial{source: s, hasSource: true}
		if f.root.evalPartial(&p) != tFalse {
			out = append(out, s)
		}
	}
	return out
}
