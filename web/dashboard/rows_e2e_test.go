package dashboard_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// rowCase is one event published to the hub and what its row must show.
type rowCase struct {
	ev     *event.Event
	device string   // the row's data-device
	want   []string // substrings of the device cell, in order
	not    []string // substrings it must not have
	detail []string // "name value" pairs of the details list
}

// TestIntegrationDashboardRows publishes one event of every kind the
// dashboard shows (device identity of USB and block devices, a coalesced
// storm, USB errors, mount and superblock events, and events from a
// fleet aggregator with a host) through a real hub and server, and
// checks in real Chromium what each row's device column says, what its
// details list, and that the host column appears only once an event has
// a host.
func TestIntegrationDashboardRows(t *testing.T) {
	chromium := testenv.LookPath(t, "chromium", "apt-get install chromium")
	hub := fanout.New(fanout.Config{})
	t.Cleanup(hub.Close)
	d := startDaemon(t, hub, "127.0.0.1:0", filepath.Join(t.TempDir(), "token"), nil)
	t.Cleanup(d.stop)
	p := newPage(t, browser(t, chromium), artifactsDir(t))
	p.do(chromedp.EmulateViewport(wideW, wideH), chromedp.Navigate("http://"+d.addr+"/#token="+d.token))
	p.wait("connected", `document.getElementById("conn").dataset.state === "live"`, 10*time.Second)

	now := time.Now()
	ev := func(src event.Source, sub string, origin event.Origin) *event.Event {
		return &event.Event{Time: now, Source: src, Subtype: sub, Tag: event.NoTag, Origin: origin}
	}
	usbAdd := ev(event.SourceUSB, event.USBAdd, event.OriginUevent)
	usbAdd.USB = &event.USBFields{Name: "1-2", Busnum: 1, Devnum: 5, VendorID: 0x0781, ProductID: 0x5581, Speed: "high-speed",
		Manufacturer: "SanDisk", Product: "Ultra USB 3.0", VendorName: "SanDisk Corp.", ProductName: "Ultra"}
	usbOwn := ev(event.SourceUSB, event.USBRemove, event.OriginUevent)
	usbOwn.USB = &event.USBFields{Name: "1-3", Busnum: 1, Devnum: 6, VendorID: 0x46f4, ProductID: 0x0001,
		Manufacturer: "QEMU", Product: "QEMU USB HARDDRIVE"}
	usbErr := ev(event.SourceUSB, event.USBError, event.OriginKmsg)
	usbErr.USB = &event.USBFields{Name: "3-1", Busnum: 3, Error: 32, Port: 1, Class: "descriptor-read"}
	usbErr.Props = map[string]string{"MESSAGE": "usb 3-1: device descriptor read/64, error -32"}
	disk := ev(event.SourceBlock, event.BlockCriticalMedium, event.OriginKmsg)
	disk.Block = &event.BlockFields{Major: 8, Minor: 0, Device: "sda", Sector: 4660, HasSector: true,
		Vendor: "ATA", Model: "WDC WD10EZEX-00B", Size: 1000204886016}
	loop := ev(event.SourceBlock, event.BlockChange, event.OriginUevent)
	loop.Block = &event.BlockFields{Major: 7, Minor: 7, Device: "loop7", Size: 1 << 20, BackingFile: "/var/tmp/disk.img"}
	loop.Coalesced = 57
	bare := ev(event.SourceBlock, event.BlockChange, event.OriginUevent)
	bare.Block = &event.BlockFields{Major: 7, Minor: 6, Device: "loop6"}
	bare.Coalesced = 1
	mnt := ev(event.SourceMount, event.MountNew, event.OriginMountinfo)
	mnt.Mount = &event.MountFields{ID: 0x2000_0000_1234, ParentID: 1, Point: "/mnt/scratch", Source: "tmpfs", FSType: "tmpfs", Options: "rw,relatime"}
	ro := ev(event.SourceMount, event.MountReadonly, event.OriginMountinfo)
	ro.Mount = &event.MountFields{ID: 77, Point: "/srv/data", Source: "/dev/sdb1", FSType: "ext4", Options: "ro,relatime", OldOptions: "rw,relatime", ReadOnly: true}
	moved := ev(event.SourceMount, event.MountMoveTo, event.OriginMountinfo)
	moved.Mount = &event.MountFields{ID: 78, Point: "/mnt/b", OldPoint: "/mnt/a", Source: "tmpfs", FSType: "tmpfs"}
	sb := ev(event.SourceSuperblock, event.SuperblockError, event.OriginFanotify)
	sb.Superblock = &event.SuperblockFields{Major: 7, Minor: 3, Device: "loop3", FSType: "ext4", Point: "/mnt/e", Errno: 117, ErrorCount: 2}

	cases := []rowCase{
		{ev: usbAdd, device: "1-2", want: []string{"SanDisk Corp. Ultra", "(0781:5581, 1-2)", "high-speed"},
			detail: []string{"usb.vendor_name SanDisk Corp.", "usb.product_string Ultra USB 3.0"}},
		{ev: usbOwn, device: "1-3", want: []string{"QEMU USB HARDDRIVE", "(46f4:0001, 1-3)"}, not: []string{"QEMU QEMU"}},
		{ev: usbErr, device: "3-1", want: []string{"3-1", "descriptor-read error on port 1: EPIPE (32)"},
			detail: []string{"usb.class descriptor-read", "MESSAGE usb 3-1: device descriptor read/64, error -32"}},
		{ev: disk, device: "sda", want: []string{"ATA WDC WD10EZEX-00B", "sda (8:0)", "932 GiB", "sector 4660"}},
		{ev: loop, device: "loop7", want: []string{"loop7 (7:7)", "1 MiB", "backed by /var/tmp/disk.img", "×57"},
			detail: []string{"coalesced 57", "block.backing_file /var/tmp/disk.img"}},
		{ev: bare, device: "loop6", want: []string{"loop6 (7:6)"}, not: []string{"×", "·"}},
		{ev: mnt, device: "/mnt/scratch", want: []string{"/mnt/scratch", "tmpfs"}, not: []string{"from tmpfs"},
			detail: []string{"mount.point /mnt/scratch", "mount.fstype tmpfs", "mount.options rw,relatime"}},
		{ev: ro, device: "/srv/data", want: []string{"/srv/data", "ext4 from /dev/sdb1", "now read-only", "options rw,relatime → ro,relatime"}},
		{ev: moved, device: "/mnt/b", want: []string{"/mnt/b", "moved from /mnt/a"}},
		{ev: sb, device: "loop3", want: []string{"/mnt/e", "ext4", "loop3 (7:3)", "EUCLEAN (117)", "2 errors so far"},
			detail: []string{"superblock.errno 117", "superblock.error_count 2"}},
	}
	for _, c := range cases {
		hub.Publish(c.ev)
	}
	sel := func(c rowCase) string {
		return fmt.Sprintf(`#events tr.ev[data-source=%q][data-subtype=%q][data-device=%q]`, c.ev.Source, c.ev.Subtype, c.device)
	}
	last := cases[len(cases)-1]
	p.wait("every row", `!!document.querySelector('`+sel(last)+`')`, 10*time.Second)
	if eval[bool](p, `document.body.dataset.hosts === "true"`) ||
		eval[string](p, `getComputedStyle(document.querySelector("#events-table th.c-host")).display`) != "none" {
		t.Errorf("host column shown before any event had a host")
	}
	for _, c := range cases {
		s := sel(c)
		cell := eval[string](p, `(document.querySelector('`+s+` td.c-dev') || {}).textContent || ""`)
		at := 0
		for _, w := range c.want {
			i := strings.Index(cell[at:], w)
			if i < 0 {
				t.Errorf("%s %s row: device column %q lacks %q (in order)", c.ev.Source, c.ev.Subtype, cell, w)
				break
			}
			at += i + len(w)
		}
		for _, n := range c.not {
			if strings.Contains(cell, n) {
				t.Errorf("%s %s row: device column %q has %q", c.ev.Source, c.ev.Subtype, cell, n)
			}
		}
		if len(c.detail) == 0 {
			continue
		}
		p.do(chromedp.Click(chromedp.CSS(s + ` button.rowbtn`)))
		p.wait("details of "+c.device, `(() => { const d = document.querySelector('`+s+`').nextElementSibling; return !!d && d.classList.contains("details"); })()`, 2*time.Second)
		pairs := eval[[]string](p, `[...document.querySelector('`+s+`').nextElementSibling.querySelectorAll("dl.fields > div")].map(e => e.querySelector("dt").textContent + " " + e.querySelector("dd").textContent)`)
		for _, w := range c.detail {
			found := false
			for _, pr := range pairs {
				found = found || pr == w
			}
			if !found {
				t.Errorf("%s %s details lack %q; have %q", c.ev.Source, c.ev.Subtype, w, pairs)
			}
		}
	}
	if got := eval[string](p, `document.querySelector('`+sel(cases[4])+` .coalesced').getAttribute("aria-label")`); got != "coalesced from 57 events" {
		t.Errorf("coalesced badge label %q", got)
	}
	checkFullWidth(p, "with details open")
	p.shot("rows-every-kind")

	// Events from a fleet aggregator carry the host: the column appears,
	// rows say which host, and a click on a host opens a pane filtered to
	// it (the daemon's own host == filter).
	for _, h := range []string{"web-17", "db-2"} {
		e := ev(event.SourceBlock, event.BlockChange, event.OriginUevent)
		e.Host = h
		e.Block = &event.BlockFields{Major: 7, Minor: 1, Device: "loop1", Model: "", Size: 4 << 20}
		hub.Publish(e)
	}
	p.wait("host rows", `document.querySelectorAll('#events tr.ev[data-host]').length === 2`, 5*time.Second)
	if got := eval[string](p, `getComputedStyle(document.querySelector("#events-table th.c-host")).display`); got != "table-cell" {
		t.Errorf("host column header display %q once events have a host", got)
	}
	if got := eval[string](p, `document.querySelector('#events tr.ev[data-host="web-17"] td.c-host').textContent`); got != "web-17" {
		t.Errorf("host cell %q, want web-17", got)
	}
	if got := eval[string](p, `document.querySelector('`+sel(cases[0])+` td.c-host').textContent`); got != "" {
		t.Errorf("host cell of a local event %q, want empty", got)
	}
	checkFullWidth(p, "with the host column")
	p.shot("rows-hosts")
	p.do(chromedp.EmulateViewport(390, 844))
	if w := eval[int](p, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("page is %d px wide at a 390 px viewport with the host column", w)
	}
	p.shot("rows-hosts-narrow")
	p.do(chromedp.EmulateViewport(wideW, wideH))
	p.do(chromedp.Click(chromedp.CSS(`#events tr.ev[data-host="web-17"] td.c-host button`)))
	p.wait("pane filtered to the host", `(() => { const s = document.querySelectorAll("#panes section");
		if (s.length !== 2) return false;
		const rows = [...s[1].querySelectorAll("tbody tr.ev")];
		return s[1].querySelector('[data-id=filter]').value === 'host == "web-17"' &&
			rows.length === 1 && rows[0].dataset.host === "web-17"; })()`, 10*time.Second)
}

// checkFullWidth fails when the event table's columns do not reach its
// right edge (a details row spanning more columns than a row shows adds
// a phantom column to the fixed layout).
func checkFullWidth(p *page, when string) {
	p.t.Helper()
	gap := eval[float64](p, `(() => { const t = document.getElementById("events-table");
		const th = [...t.querySelectorAll("thead th")].filter(e => getComputedStyle(e).display !== "none").pop();
		return t.getBoundingClientRect().right - th.getBoundingClientRect().right; })()`)
	if gap > 2 || gap < -2 {
		p.t.Errorf("%s: the last column ends %.0f px before the table's edge", when, gap)
	}
}
