package ueventbench_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/bench/uevent"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/sources/uevent"
)

// burst is the number of uevents written per burst (BASELINES.md §5).
const burst = 20000

// outcome is what one reader made of one burst.
type outcome struct {
	got         int           // burst uevents received
	lat         []int64       // write→receive, ns, one per received uevent
	dur         time.Duration // first write → last receive
	writeDur    time.Duration // first write → last burst write
	enobufs     int           // ENOBUFS returns (bare reader)
	lossEvents  int           // loss items handed out (uevent source)
	reported    uint64        // uevents those loss items say were lost
	unknownLoss int           // loss items with an unknown count
	dropped     uint64        // uevents the source's own queues dropped
}

func (o *outcome) missing() int { return burst - o.got }

// writeBurst writes the burst, then markers until seen reports one
// arrived (a marker can itself be lost when the buffer overflowed).
func writeBurst(b *testing.B, id, marker string, seen *atomic.Bool) (start time.Time, wrote time.Duration) {
	tr, err := ueventbench.OpenTrigger(ueventbench.NullUevent)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	start = time.Now()
	for range burst {
		if _, err := tr.Change(id); err != nil {
			b.Fatal(err)
		}
	}
	wrote = time.Since(start)
	for range 100 {
		if _, err := tr.Change(marker); err != nil {
			b.Fatal(err)
		}
		for t := time.Now(); time.Since(t) < 100*time.Millisecond; time.Sleep(time.Millisecond) {
			if seen.Load() {
				return start, wrote
			}
		}
	}
	b.Fatal("no end marker received in 10 s")
	return start, wrote
}

// bareBurst sends one burst past a bare netlink reader.
func bareBurst(b *testing.B, rcvbuf int) outcome {
	r, err := ueventbench.OpenBare(rcvbuf)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	id, marker := ueventbench.NewUUID(), ueventbench.NewUUID()
	idB, markerB := []byte(id), []byte(marker)
	var o outcome
	o.lat = make([]int64, 0, burst)
	var seen, stop atomic.Bool
	var last int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 16<<10)
		for !stop.Load() {
			n, err := r.Recv(buf)
			if errors.Is(err, unix.ENOBUFS) {
				o.enobufs++
				continue
			}
			if err != nil {
				continue // receive timeout: look at stop again
			}
			now := time.Now().UnixNano()
			switch u := ueventbench.Field(buf[:n], ueventbench.KeyUUID); {
			case bytes.Equal(u, idB):
				o.got++
				ts, _ := strconv.ParseInt(string(ueventbench.Field(buf[:n], ueventbench.KeyTS)), 10, 64)
				o.lat = append(o.lat, now-ts)
				last = now
			case bytes.Equal(u, markerB):
				seen.Store(true)
			}
		}
	}()
	start, wrote := writeBurst(b, id, marker, &seen)
	stop.Store(true)
	<-done
	o.dur, o.writeDur = time.Duration(last-start.UnixNano()), wrote
	return o
}

// sourceBurst sends one burst through notifyd's uevent source
// (sources/uevent.Monitor with its deployed defaults but for rcvbuf) to
// one consumer of its subscription, as sources/block and sources/usb
// consume it.
func sourceBurst(b *testing.B, rcvbuf int) outcome {
	m := uevent.New(uevent.Config{RcvBuf: rcvbuf})
	sub := m.Subscribe(func(u *uevent.Uevent) bool { return u.Subsystem() == "mem" })
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			b.Error(err)
		}
	}()
	for m.Health().State != event.HealthLive {
		select {
		case err := <-ran:
			b.Fatalf("uevent monitor: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	id, marker := ueventbench.NewUUID(), ueventbench.NewUUID()
	var o outcome
	o.lat = make([]int64, 0, burst)
	var seen atomic.Bool
	var last int64
	cctx, ccancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			it, err := sub.Next(cctx)
			if err != nil {
				return
			}
			now := time.Now().UnixNano()
			if it.Loss != nil {
				o.lossEvents++
				if it.Loss.Count == event.CountUnknown {
					o.unknownLoss++
				} else {
					o.reported += it.Loss.Count
				}
				continue
			}
			switch it.V.Get("SYNTH_UUID") {
			case id:
				o.got++
				ts, _ := strconv.ParseInt(it.V.Get("SYNTH_ARG_TS"), 10, 64)
				o.lat = append(o.lat, now-ts)
				last = now
			case marker:
				seen.Store(true)
			}
		}
	}()
	start, wrote := writeBurst(b, id, marker, &seen)
	// A loss is reported once the socket is drained: give it time.
	time.Sleep(100 * time.Millisecond)
	ccancel()
	<-done
	o.dur, o.writeDur = time.Duration(last-start.UnixNano()), wrote
	o.dropped = m.Stats().Dropped
	return o
}

// BenchmarkBurst writes bursts of 20 000 synthetic uevents (write change
// to /sys/class/mem/null/uevent as fast as one thread can) past a bare
// netlink reader and then past notifyd's uevent source, one after the
// other in each op, with the same receive buffer: the kernel default
// (which overflows, so loss reporting is exercised) and the source's
// default of 8 MiB. Reported per burst, averaged over the ops:
//
//   - events/s, bare-events/s: burst uevents received per second, from
//     the first write to the last receive (bounded by the writer:
//     writes/s, bare-writes/s, since each write broadcasts synchronously);
//   - p50-µs, p99-µs (bare-…): write→receive latency under the burst
//     (queueing dominated), at the source's consumer;
//   - lost/burst, kernel-lost/burst: burst uevents that never arrived at
//     the source's consumer and at the bare reader;
//   - reported-lost/burst, loss-events/burst: what the source's loss
//     items said (estimated counts, from SEQNUM gaps);
//   - unreported/burst: lost beyond what the loss items reported (target
//     0: nothing is lost silently), overreported/burst: reported beyond
//     what was lost (other uevents on the machine may count, since the
//     estimate covers every uevent);
//   - excess-lost/burst: lost by the source beyond the bare reader's loss
//     in the same op (target 0), dropped/burst: dropped by the source's
//     own queues (target 0).
func BenchmarkBurst(b *testing.B) {
	testenv.Root(b, "writes "+ueventbench.NullUevent)
	for _, c := range []struct {
		name   string
		rcvbuf int
	}{{"rcvbuf=kernel-default", ueventbench.KernelDefaultRcvBuf}, {"rcvbuf=8MiB", uevent.DefaultRcvBuf}} {
		b.Run(c.name, func(b *testing.B) {
			var bareLat, srcLat []int64
			var bareRate, srcRate, bareLost, srcLost, enobufs, lossEv, reported, unknown float64
			var unreported, over, excess, dropped, bareWr, srcWr float64
			for b.Loop() {
				bo := bareBurst(b, c.rcvbuf)
				so := sourceBurst(b, c.rcvbuf)
				bareLat, srcLat = append(bareLat, bo.lat...), append(srcLat, so.lat...)
				bareRate += float64(bo.got) / bo.dur.Seconds()
				srcRate += float64(so.got) / so.dur.Seconds()
				bareLost += float64(bo.missing())
				srcLost += float64(so.missing())
				enobufs += float64(bo.enobufs)
				lossEv += float64(so.lossEvents)
				reported += float64(so.reported)
				unknown += float64(so.unknownLoss)
				if so.unknownLoss == 0 {
					unreported += float64(max(0, so.missing()-int(so.reported)))
				}
				over += float64(max(0, int(so.reported)-so.missing()))
				excess += float64(max(0, so.missing()-bo.missing()))
				dropped += float64(so.dropped)
				bareWr += burst / bo.writeDur.Seconds()
				srcWr += burst / so.writeDur.Seconds()
			}
			n := float64(b.N)
			b.ReportMetric(srcRate/n, "events/s")
			b.ReportMetric(bareRate/n, "bare-events/s")
			b.ReportMetric(float64(ueventbench.Percentile(srcLat, 50))/1e3, "p50-µs")
			b.ReportMetric(float64(ueventbench.Percentile(srcLat, 99))/1e3, "p99-µs")
			b.ReportMetric(float64(ueventbench.Percentile(bareLat, 50))/1e3, "bare-p50-µs")
			b.ReportMetric(float64(ueventbench.Percentile(bareLat, 99))/1e3, "bare-p99-µs")
			b.ReportMetric(srcLost/n, "lost/burst")
			b.ReportMetric(bareLost/n, "kernel-lost/burst")
			b.ReportMetric(enobufs/n, "bare-enobufs/burst")
			b.ReportMetric(lossEv/n, "loss-events/burst")
			b.ReportMetric(reported/n, "reported-lost/burst")
			b.ReportMetric(unknown/n, "unknown-count-losses/burst")
			b.ReportMetric(unreported/n, "unreported/burst")
			b.ReportMetric(over/n, "overreported/burst")
			b.ReportMetric(excess/n, "excess-lost/burst")
			b.ReportMetric(dropped/n, "dropped/burst")
			b.ReportMetric(srcWr/n, "writes/s")
			b.ReportMetric(bareWr/n, "bare-writes/s")
		})
	}
}
