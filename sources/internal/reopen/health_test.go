package reopen

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
)

func TestHealth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHealth("keys", event.SourceKey)
		if g := h.Get(); g.State != event.HealthStarting || g.Name != "keys" || g.Source != event.SourceKey || g.Origins != nil {
			t.Fatalf("new = %+v", g)
		}
		time.Sleep(time.Second)
		h.Set(event.HealthLive, "", nil)
		h.SetOrigins(event.OriginWatchQueue)
		since := h.Get().Since
		time.Sleep(time.Second)
		h.Set(event.HealthLive, "", nil) // same state and reason: Since stays
		if g := h.Get(); !g.Since.Equal(since) || len(g.Origins) != 1 || g.Origins[0] != event.OriginWatchQueue {
			t.Fatalf("after a repeated Set: %+v (since %v)", g, since)
		}
		h.Set(event.HealthDegraded, "restarting", fmt.Errorf("open: %w", unix.ENOPKG))
		h.SetOrigins()
		h.Events.Add(3)
		h.Losses.Add(1)
		g := h.Get()
		if g.State != event.HealthDegraded || g.Errno != "ENOPKG" || g.Since.Equal(since) || g.Origins != nil || g.Events != 3 || g.Losses != 1 {
			t.Fatalf("degraded = %+v", g)
		}
		g.Origins = append(g.Origins, "x")
		if h.Get().Origins != nil {
			t.Fatalf("Get shares its origins")
		}
	})
	if ErrnoName(nil) != "" || ErrnoName(unix.Errno(4095)) != "4095" || ErrnoName(fmt.Errorf("x: %w", unix.EPIPE)) != "EPIPE" {
		t.Fatalf("ErrnoName")
	}
}
