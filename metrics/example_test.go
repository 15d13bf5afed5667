package metrics_test

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/metrics"
)

// The daemon hands the sources the hub itself (it counts what is
// published, per source and subtype) and mounts the handler at /metrics.
func Example() {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()

	hub.Publish(&event.Event{Time: time.Now(), Source: event.SourceBlock, Subtype: event.BlockAdd, Tag: event.NoTag})

	srv := httptest.NewServer(metrics.New(metrics.Config{Hub: hub}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "notifyd_events_total") || strings.HasPrefix(l, "notifyd_published_total") {
			fmt.Println(l)
		}
	}
	// Output:
	// notifyd_events_total{source="block",subtype="add"} 1
	// notifyd_published_total 1
}
