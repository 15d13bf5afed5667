package e2ebench_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/filter"
	"github.com/notifyd/notifyd/internal/rig/bench/uevent"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/sources/block"
	"github.com/notifyd/notifyd/sources/uevent"
)

// blockDev picks the block device whose uevent file is written.
func blockDev(b *testing.B) string {
	if d := os.Getenv("NOTIFYD_BENCH_BLOCKDEV"); d != "" {
		return d
	}
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		b.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if slices.Contains(names, "zram0") {
		return "zram0"
	}
	for _, n := range names {
		if !strings.HasPrefix(n, "loop") && !strings.HasPrefix(n, "ram") {
			return n
		}
	}
	b.Skip("no block device to write uevents to (set NOTIFYD_BENCH_BLOCKDEV)")
	return ""
}

// paced writes n change uevents for id at rate per second, each stamped
// just before its write, sleeping with nanosleep between writes (Go's
// timers have a 1 ms resolution here, which would turn 10 k/s into bursts
// of 10). It returns the achieved rate.
func paced(b *testing.B, dev, id string, n, rate int) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tr, err := ueventbench.OpenTrigger(filepath.Join("/sys/block", dev, "uevent"))
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			ts := unix.NsecToTimespec(d.Nanoseconds())
			unix.Nanosleep(&ts, nil)
		}
		if _, err := tr.Change(id); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// result of one phase.
type result struct {
	lat  []int64
	got  int
	loss int
	rate float64
}

// bare runs the paced writes past a bare netlink reader.
func bare(b *testing.B, dev string, n, rate int) result {
	r, err := ueventbench.OpenBare(uevent.DefaultRcvBuf)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	id := ueventbench.NewUUID()
	idB := []byte(id)
	res := result{lat: make([]int64, 0, n)}
	var got atomic.Int64
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 16<<10)
		for !stop.Load() {
			k, err := r.Recv(buf)
			if errors.Is(err, unix.ENOBUFS) {
				res.loss++
				continue
			}
			if err != nil {
				continue
			}
			now := time.Now().UnixNano()
			if bytes.Equal(ueventbench.Field(buf[:k], ueventbench.KeyUUID), idB) {
				ts, _ := strconv.ParseInt(string(ueventbench.Field(buf[:k], ueventbench.KeyTS)), 10, 64)
				res.lat = append(res.lat, now-ts)
				got.Add(1)
			}
		}
	}()
	res.rate = paced(b, dev, id, n, rate)
	for t := time.Now(); got.Load() < int64(n) && time.Since(t) < 2*time.Second; {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	<-done
	res.got = int(got.Load())
	return res
}

// pipeline is notifyd's path: uevent monitor → block source → hub.
type pipeline struct {
	hub    *fanout.Hub
	cancel context.CancelFunc
	done   chan struct{}
}

func startPipeline(b *testing.B) *pipeline {
	m := uevent.New(uevent.Config{})
	src := block.New(block.Config{Uevents: m})
	hub := fanout.New(fanout.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	p := &pipeline{hub: hub, cancel: cancel, done: make(chan struct{})}
	errs := make(chan error, 2)
	go func() { errs <- m.Run(ctx) }()
	go func() { errs <- src.Run(ctx, hub) }()
	go func() {
		defer close(p.done)
		for range 2 {
			if err := <-errs; err != nil {
				b.Error(err)
			}
		}
	}()
	for m.Health().State != event.HealthLive {
		time.Sleep(time.Millisecond)
	}
	return p
}

func (p *pipeline) close() {
	p.cancel()
	<-p.done
	p.hub.Close()
}

// through runs the paced writes through the pipeline to one subscriber
// whose filter selects this device's change events.
func through(b *testing.B, p *pipeline, dev string, n, rate int) result {
	f, err := filter.Parse(fmt.Sprintf("source == block && subtype == change && dev == %s", dev))
	if err != nil {
		b.Fatal(err)
	}
	sub, _, err := p.hub.Subscribe(fanout.Options{Match: f, Label: "e2ebench"})
	if err != nil {
		b.Fatal(err)
	}
	id := ueventbench.NewUUID()
	res := result{lat: make([]int64, 0, n)}
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf []*event.Event
		for {
			select {
			case <-sub.Ready():
			case <-sub.Done():
				return
			}
			buf = sub.Drain(buf[:0])
			now := time.Now().UnixNano()
			for _, ev := range buf {
				if ev.Loss != nil {
					res.loss++
					continue
				}
				if ev.Props["SYNTH_UUID"] != id {
					continue
				}
				ts, _ := strconv.ParseInt(ev.Props["SYNTH_ARG_TS"], 10, 64)
				res.lat = append(res.lat, now-ts)
				got.Add(1)
			}
		}
	}()
	res.rate = paced(b, dev, id, n, rate)
	for t := time.Now(); got.Load() < int64(n) && time.Since(t) < 2*time.Second; {
		time.Sleep(time.Millisecond)
	}
	sub.Close()
	<-done
	res.got = int(got.Load())
	return res
}

// BenchmarkKernelToSubscriber writes change uevents to a block device at
// 1 000 and 10 000 per second for one second per phase and measures the
// write→receive latency at a subscriber of the hub (uevent source →
// block source → hub → filtered subscriber), and in the same op, before
// the pipeline starts, at a bare netlink reader. Reported: p50-µs, p99-µs, max-µs; bare-p50-µs,
// bare-p99-µs; lost (events not received, per op; target 0),
// loss-events; events/s actually written.
func BenchmarkKernelToSubscriber(b *testing.B) {
	testenv.Root(b, "writes to /sys/block/*/uevent")
	dev := blockDev(b)
	for _, rate := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			n := rate // one second per phase
			var lat, bareLat []int64
			var lost, lossEv, bareLost, wrote float64
			for b.Loop() {
				// The phases do not overlap: the pipeline starts after
				// the bare reader is done and stops before the next op.
				br := bare(b, dev, n, rate)
				p := startPipeline(b)
				r := through(b, p, dev, n, rate)
				p.close()
				lat, bareLat = append(lat, r.lat...), append(bareLat, br.lat...)
				lost += float64(n - r.got)
				lossEv += float64(r.loss)
				bareLost += float64(n - br.got)
				wrote += r.rate
			}
			k := float64(b.N)
			b.ReportMetric(float64(ueventbench.Percentile(lat, 50))/1e3, "p50-µs")
			b.ReportMetric(float64(ueventbench.Percentile(lat, 99))/1e3, "p99-µs")
			b.ReportMetric(float64(ueventbench.Percentile(lat, 100))/1e3, "max-µs")
			b.ReportMetric(float64(ueventbench.Percentile(bareLat, 50))/1e3, "bare-p50-µs")
			b.ReportMetric(float64(ueventbench.Percentile(bareLat, 99))/1e3, "bare-p99-µs")
			b.ReportMetric(lost/k, "lost")
			b.ReportMetric(lossEv/k, "loss-events")
			b.ReportMetric(bareLost/k, "bare-lost")
			b.ReportMetric(wrote/k, "events/s")
		})
	}
}
