package filter

import (
	"reflect"
	"testing"

	"github.com/notifyd/notifyd/event"
)

// TestHost: the host field of a fleet aggregator's events, on events and
// on losses (a loss of one host is known to be that host's; a loss
// without a host may concern any).
func TestHost(t *testing.T) {
	ev := &event.Event{Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag, Origin: event.OriginKmsg, Host: "web-17",
		Block: &event.BlockFields{Major: 8, Device: "sda"}}
	local := &event.Event{Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag, Origin: event.OriginKmsg}
	hostLoss := event.NewLoss("", event.OriginSubscriber, 3, "fleet outbox full")
	hostLoss.Host = "web-18"
	anyLoss := event.NewLoss("", event.OriginSubscriber, 3, "subscriber queue full")
	cases := []struct {
		expr string
		ev   *event.Event
		want bool
	}{
		{`host == "web-17"`, ev, true},
		{`host == web-18`, ev, false},
		{`host ~ "web-*" && source == block`, ev, true},
		{`host in (db-1, web-17)`, ev, true},
		{`host != "web-17"`, ev, false},
		{`host == "web-17"`, local, false}, // no host: equals nothing
		{`host != "web-17"`, local, true},
		{`host == "web-17"`, hostLoss, false},
		{`host == "web-18" && source == usb`, hostLoss, true},
		{`host == "web-17"`, anyLoss, true}, // unknown host: maybe
	}
	for _, c := range cases {
		f := MustParse(c.expr)
		if got := f.Match(c.ev); got != c.want {
			t.Errorf("%q on %+v: got %v, want %v", c.expr, c.ev.Host, got, c.want)
		}
		if g := MustParse(f.String()); g.String() != f.String() {
			t.Errorf("canonical form of %q: %q", c.expr, g.String())
		}
	}
	// The kernel filter cannot see a host: it does not narrow on one.
	got := Kernel([]*Filter{MustParse(`host == "web-17" && source == key`)})
	want := Kernel([]*Filter{MustParse(`source == key`)})
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kernel filter narrowed on a host: %v, want %v", got, want)
	}
}
