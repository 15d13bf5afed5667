package ctl

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
)

// printer writes events in the human form: one line per event.
type printer struct {
	w     io.Writer
	color bool
}

func newPrinter(w io.Writer, noColor bool) *printer {
	p := &printer{w: w}
	if f, ok := w.(*os.File); ok && !noColor && os.Getenv("NO_COLOR") == "" {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			p.color = true
		}
	}
	return p
}

const (
	ansiRed   = "\x1b[1;31m"
	ansiDim   = "\x1b[2m"
	ansiReset = "\x1b[0m"
)

// FormatEvent returns the one-line human form of ev:
//
//	16:40:01.123 key    linked         key=123 aux=456 keytype=keyring desc="_ses" tag=3  #42
//	16:40:01.125 !! LOST 12 key events at watch_queue (seq 10-21): notification queue overflowed  #21
func FormatEvent(ev *event.Event) string {
	var b strings.Builder
	t := ev.Time
	if t.IsZero() {
		t = time.Now()
	}
	b.WriteString(t.Local().Format("15:04:05.000"))
	b.WriteByte(' ')
	if l := ev.Loss; l != nil {
		b.WriteString("!! LOST ")
		switch {
		case !l.Known():
			b.WriteString("an unknown number of")
		case l.Estimated:
			b.WriteString("about " + strconv.FormatUint(l.Count, 10))
		default:
			b.WriteString(strconv.FormatUint(l.Count, 10))
		}
		src := string(l.Source)
		if src == "" {
			src = string(ev.Source)
		}
		if src != "" {
			b.WriteString(" " + src)
		}
		b.WriteString(" events at " + string(ev.Origin))
		if l.FromSeq != 0 || l.ToSeq != 0 {
			fmt.Fprintf(&b, " (seq %d-%d)", l.FromSeq, l.ToSeq)
		}
		if l.Reason != "" {
			b.WriteString(": " + text(l.Reason))
		}
		if ev.Seq != 0 {
			fmt.Fprintf(&b, "  #%d", ev.Seq)
		}
		return b.String()
	}
	sub := ev.Subtype
	if ev.Snapshot {
		sub = "present"
	}
	fmt.Fprintf(&b, "%-6s %-14s", ev.Source, sub)
	var f []string
	add := func(k, v string) { f = append(f, k+"="+v) }
	// word adds a value printed as it is unless it holds what a
	// terminal would act on, or a space (see shown).
	word := func(k, v string) { add(k, shown(v)) }
	if k := ev.Key; k != nil {
		add("key", strconv.FormatInt(int64(k.ID), 10))
		if k.Aux != 0 {
			add("aux", strconv.FormatInt(int64(k.Aux), 10))
		}
		if k.Type != "" {
			word("keytype", k.Type)
		}
		if k.Description != "" {
			add("desc", strconv.Quote(k.Description))
		}
		if k.Described {
			add("uid", strconv.FormatInt(int64(int32(k.UID)), 10))
		}
	}
	if d := ev.Block; d != nil {
		if d.Device != "" {
			word("dev", d.Device)
		}
		add("devnum", fmt.Sprintf("%d:%d", d.Major, d.Minor))
		if d.HasSector {
			add("sector", strconv.FormatUint(d.Sector, 10))
		}
		// Identity (docs/sources.md, Device identity).
		if n := d.DisplayName(); n != "" {
			add("name", strconv.Quote(n))
		}
		if d.Size != 0 {
			add("size", strings.ReplaceAll(event.FormatSize(d.Size), " ", ""))
		}
		if d.Parent != "" {
			word("parent", d.Parent)
		}
		if d.Removable {
			add("removable", "yes")
		}
		if d.ReadOnly {
			add("ro", "yes")
		}
		if d.BackingFile != "" {
			add("file", strconv.Quote(d.BackingFile))
		}
		if d.Label != "" {
			add("label", strconv.Quote(d.Label))
		}
		if d.FSType != "" {
			word("fs", d.FSType)
		}
	}
	if u := ev.USB; u != nil {
		word("usb", u.Name)
		if u.Busnum != 0 || u.Devnum != 0 {
			add("bus", fmt.Sprintf("%03d/%03d", u.Busnum, u.Devnum))
		}
		if u.VendorID != 0 || u.ProductID != 0 {
			add("id", fmt.Sprintf("%04x:%04x", u.VendorID, u.ProductID))
		}
		if u.Speed != "" {
			word("speed", u.Speed)
		}
		if u.Error != 0 {
			add("error", strconv.FormatUint(uint64(u.Error), 10))
		}
		if u.Class != "" {
			word("class", u.Class)
		}
		if u.Port != 0 {
			add("port", strconv.Itoa(int(u.Port)))
		}
		// Identity (docs/sources.md, Device identity).
		if n := u.DisplayName(); n != "" {
			add("name", strconv.Quote(n))
		}
		if u.DeviceClassName != "" && u.DeviceClassName != "(Defined at Interface level)" {
			add("type", strconv.Quote(u.DeviceClassName))
		}
		if u.Serial != "" {
			add("serial", strconv.Quote(u.Serial))
		}
	}
	if ev.Coalesced > 1 {
		add("coalesced", strconv.FormatUint(ev.Coalesced, 10))
	}
	if m := ev.Mount; m != nil {
		if m.Point != "" {
			add("at", strconv.Quote(m.Point))
		}
		if m.OldPoint != "" {
			add("from", strconv.Quote(m.OldPoint))
		}
		if m.Source != "" {
			add("src", strconv.Quote(m.Source))
		}
		if m.FSType != "" {
			word("fs", m.FSType)
		}
		if m.Options != "" {
			word("opts", m.Options)
		}
		if m.OldOptions != "" && m.OldOptions != m.Options {
			word("was", m.OldOptions)
		}
		add("mnt", strconv.FormatUint(m.ID, 10))
	}
	if sb := ev.Superblock; sb != nil {
		if sb.Device != "" {
			word("dev", sb.Device)
		}
		if sb.FSType != "" {
			word("fs", sb.FSType)
		}
		if sb.Point != "" {
			add("at", strconv.Quote(sb.Point))
		}
		if sb.Errno != 0 {
			add("errno", strconv.FormatUint(uint64(sb.Errno), 10))
		}
		if sb.ErrorCount > 1 {
			add("count", strconv.FormatUint(uint64(sb.ErrorCount), 10))
		}
	}
	if ev.Tag != event.NoTag {
		add("tag", strconv.Itoa(ev.Tag))
	}
	if ev.Origin != "" && ev.Origin != event.OriginWatchQueue {
		word("origin", string(ev.Origin))
	}
	if ev.Via != "" && ev.Via != string(ev.Origin) {
		word("via", ev.Via)
	}
	if m, ok := ev.Props["MESSAGE"]; ok {
		add("msg", strconv.Quote(m))
	}
	b.WriteString(" " + strings.Join(f, " "))
	if !ev.Snapshot || ev.Seq != 0 {
		fmt.Fprintf(&b, "  #%d", ev.Seq)
	}
	return strings.TrimRight(b.String(), " ")
}

// shown is v as an unquoted field value when it is plain text, and
// quoted (strconv.Quote) when it holds a space, which would split the
// field, or anything a terminal would act on: control characters (an
// escape sequence), other non-printing runes, invalid UTF-8. Some values
// are another local user's choice: a FUSE mount's file system type is
// "fuse." and whatever its user gave fusermount as subtype=, which
// /proc/self/mountinfo passes on with only space, tab, newline and
// backslash escaped.
func shown(v string) string {
	if strings.ContainsRune(v, ' ') || !printable(v) {
		return strconv.Quote(v)
	}
	return v
}

// text is free text (a loss's reason) as it is, or quoted when it holds
// anything a terminal would act on.
func text(v string) string {
	if !printable(v) {
		return strconv.Quote(v)
	}
	return v
}

func printable(v string) bool {
	return utf8.ValidString(v) && strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
}

func (p *printer) event(ev *event.Event) {
	line := FormatEvent(ev)
	if p.color && ev.Loss != nil {
		line = ansiRed + line + ansiReset
	}
	fmt.Fprintln(p.w, line)
}

// note prints a notice line ("# ...").
func (p *printer) note(format string, args ...any) {
	line := "# " + fmt.Sprintf(format, args...)
	if p.color {
		line = ansiDim + line + ansiReset
	}
	fmt.Fprintln(p.w, line)
}

// writeStatus prints the status document for humans.
func writeStatus(w io.Writer, st *api.Status) {
	fmt.Fprintf(w, "notifyd: epoch %s, seq %d, protocol %d\n", st.Hub.Epoch, st.Hub.Seq, st.Protocol)
	fmt.Fprintln(w, "\nSources:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tSOURCE\tSTATE\tVIA\tEVENTS\tLOSSES\tSINCE\tREASON")
	for _, h := range st.Sources {
		var via []string
		for _, o := range h.Origins {
			via = append(via, string(o))
		}
		reason := h.Reason
		if h.Errno != "" && !strings.Contains(reason, h.Errno) {
			reason += " (" + h.Errno + ")"
		}
		since := "-"
		if !h.Since.IsZero() {
			since = h.Since.Local().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", h.Name, h.Source, h.State, strings.Join(via, ","), h.Events, h.Losses, since, reason)
	}
	if len(st.Sources) == 0 {
		fmt.Fprintln(tw, "  (none reported)")
	}
	tw.Flush()
	h := st.Hub
	fmt.Fprintf(w, "\nHub: %d published, history %d events", h.Published, h.HistoryLen)
	if h.HistoryLow != 0 {
		fmt.Fprintf(w, " (seq %d-%d)", h.HistoryLow, h.Seq)
	}
	fmt.Fprintf(w, ", %d deliveries, %d dropped from queues, %d denied by policy\n", h.Deliveries, h.Drops, h.Denials)
	wb := st.Web
	fmt.Fprintf(w, "WebSocket: %d open, %d accepted, %d refused, %d frames (%d batches), %d write timeouts, %d key watches\n",
		wb.Connections, wb.Accepted, wb.Refused, wb.Frames, wb.Batches, wb.WriteTimeouts, wb.KeyWatches)
	writeDBus(w, st.DBus)
	fmt.Fprintf(w, "\nSubscribers (%d):\n", len(st.Subscribers))
	subs := append([]api.SubscriberStatus(nil), st.Subscribers...)
	sort.Slice(subs, func(i, j int) bool { return subs[i].ID < subs[j].ID })
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tUID\tPOLICY\tDELIVERED\tLOST\tLOSS-EVENTS\tDENIED\tQUEUE\tLABEL")
	var lost uint64
	for _, s := range subs {
		lost += s.Lost
		fmt.Fprintf(tw, "  %d\t%d\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", s.ID, s.UID, s.Policy, s.Delivered, s.Lost, s.LossEvents, s.Denied, queueColumn(s), s.Label)
	}
	tw.Flush()
	var srcLoss uint64
	for _, s := range st.Sources {
		srcLoss += s.Losses
	}
	fmt.Fprintf(w, "\nLoss totals: %d loss events from sources, %d events lost by current subscribers\n", srcLoss, lost)
}

// queueColumn is a subscriber's queue: "queued/capacity", and "+loss" when
// the queue overflowed and a loss item waits ahead of it (it is not one
// of the queued events, so the count never exceeds the capacity).
func queueColumn(s api.SubscriberStatus) string {
	q := fmt.Sprintf("%d/%d", s.Queued, s.QueueLen)
	if s.LossPending {
		q += " +loss"
	}
	return q
}

// writeDBus prints the D-Bus line of the status.
func writeDBus(w io.Writer, d *api.DBusStatus) {
	if d == nil {
		fmt.Fprintln(w, "D-Bus: off")
		return
	}
	since := ""
	if !d.Since.IsZero() {
		since = " since " + d.Since.Local().Format("2006-01-02 15:04:05")
	}
	switch {
	case d.Owned:
		fmt.Fprintf(w, "D-Bus: %s, owning %s as %s on %s%s, %d subscriptions", d.State, d.Name, d.Unique, d.Bus, since, d.Subscriptions)
	default:
		fmt.Fprintf(w, "D-Bus: %s, NOT owning %s on %s%s", d.State, d.Name, d.Bus, since)
		if d.Error != "" {
			fmt.Fprintf(w, " (%s)", d.Error)
		}
	}
	if d.Connects > 1 {
		fmt.Fprintf(w, "; connected %d times (the bus went away and came back)", d.Connects)
	}
	fmt.Fprintln(w)
}
