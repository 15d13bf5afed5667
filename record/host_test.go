package record

import (
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
)

// TestStreamHost: a fleet aggregator's history stream keeps each event's
// host.
func TestStreamHost(t *testing.T) {
	evs := []*event.Event{
		{Epoch: 1, Seq: 1, Time: time.Unix(1, 0), Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag, Origin: event.OriginKmsg,
			Block: &event.BlockFields{Major: 8, Device: "sda"}, Host: "web-17", Props: map[string]string{"HOST_POS": "00000000000000aa:5"}},
		{Epoch: 1, Seq: 2, Time: time.Unix(2, 0), Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag, Origin: event.OriginKmsg,
			Block: &event.BlockFields{Major: 8, Device: "sdb"}},
	}
	b, err := EncodeStream(evs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeStream(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Host != "web-17" || got[0].Props["HOST_POS"] != "00000000000000aa:5" || len(got[0].Props) != 1 || got[1].Host != "" {
		t.Fatalf("decoded %s / %s", got[0].JSON(), got[1].JSON())
	}
}
