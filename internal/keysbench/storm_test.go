package keysbench_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/testenv"
	"github.com/notifyd/notifyd/internal/vm/guest"
	"github.com/notifyd/notifyd/sources/keys"
	"github.com/notifyd/notifyd/watchqueue"
)

// storm is the number of KEYCTL_UPDATE calls per phase.
const storm = 20000

// phase is what one watcher made of one storm.
type phase struct {
	got      int           // update notifications received
	losses   int           // loss events / "-- LOSS --" lines
	stormDur time.Duration // the updates themselves
}

func newKey(b *testing.B, name string) int {
	id, err := unix.AddKey("user", name, []byte("0"), unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		b.Fatalf("add key: %v", err)
	}
	return id
}

// updates runs the storm on key and returns when it started and how long
// it took.
func updates(b *testing.B, key int) (time.Time, time.Duration) {
	payload := []byte("payload")
	start := time.Now()
	for range storm {
		if _, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, key, payload, 0); err != nil {
			b.Fatalf("update key: %v", err)
		}
	}
	return start, time.Since(start)
}

func invalidate(key int) { unix.KeyctlInt(unix.KEYCTL_INVALIDATE, key, 0, 0, 0) }

// keyctlWatch runs the storm past "keyctl watch KEY" and counts the lines
// it writes to a pipe read here (keyctl block-buffers its output: the
// last lines arrive when it exits, after the key's removal).
func keyctlWatch(b *testing.B) phase {
	key := newKey(b, fmt.Sprintf("keysbench-keyctl-%d", time.Now().UnixNano()))
	defer invalidate(key)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := guest.KeyctlCommand(ctx, "watch", strconv.Itoa(key))
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start keyctl watch: %v", err)
	}
	var p phase
	prefix := strconv.Itoa(key) + " "
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.Contains(l, "LOSS"):
				p.losses++
			case strings.HasPrefix(l, prefix) && !strings.HasSuffix(l, " gc") && !strings.HasSuffix(l, " inv"):
				p.got++
			}
		}
	}()
	time.Sleep(time.Second) // let keyctl set up its watch (no way to ask it)
	_, d := updates(b, key)
	invalidate(key) // the removal ends keyctl watch, which flushes its output
	select {
	case <-read:
	case <-time.After(20 * time.Second):
		cmd.Process.Signal(syscall.SIGINT)
		<-read
	}
	cmd.Wait()
	p.stormDur = d
	return p
}

// keyctlQueue is the queue size keyctl watch sets (keyutils 1.6.3
// keyctl_watch.c: ioctl(fd, IOC_WATCH_QUEUE_SET_SIZE, 256)); it has no
// option to change it.
const keyctlQueue = 256

// notifyd runs the storm past the key source with a queue of size notes,
// publishing into a hub, to one subscriber.
func notifyd(b *testing.B, size int) phase {
	key := newKey(b, fmt.Sprintf("keysbench-notifyd-%d", time.Now().UnixNano()))
	defer invalidate(key)
	src := keys.New(keys.Config{Watch: []string{strconv.Itoa(key)}, QueueSize: size})
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	sub, _, err := hub.Subscribe(fanout.Options{QueueLen: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- src.Run(ctx, hub) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			b.Error(err)
		}
	}()
	for src.Health().State == event.HealthStarting {
		time.Sleep(time.Millisecond)
	}
	if h := src.Health(); h.State != event.HealthLive {
		b.Fatalf("key source: %s: %s", h.State, h.Reason)
	}
	var p phase
	removed := make(chan struct{})
	go func() {
		defer close(removed)
		var buf []*event.Event
		for {
			select {
			case <-sub.Ready():
			case <-sub.Done():
				return
			}
			buf = sub.Drain(buf[:0])
			for _, ev := range buf {
				switch {
				case ev.Loss != nil:
					p.losses++
				case ev.Key != nil && int(ev.Key.ID) == key && ev.Subtype == event.KeyUpdated:
					p.got++
				case ev.Key != nil && int(ev.Key.ID) == key && ev.Subtype == event.MetaRemoval:
					return
				}
			}
		}
	}()
	_, d := updates(b, key)
	invalidate(key)
	select {
	case <-removed:
	case <-time.After(20 * time.Second):
		sub.Close()
		<-removed
	}
	p.stormDur = d
	return p
}

// BenchmarkKeyStorm (guest only) runs a storm of 20 000 key updates past
// keyctl watch (whose queue is always 256 notes) and then past notifyd's
// key source → hub → subscriber, first with the same 256-note queue, then
// with a one-note queue (the kernel rounds it up to one page, 32 notes),
// on fresh keys, and prints the counts side by side. Reported per storm,
// averaged over the ops:
//
//   - received, keyctl-received, received-q1: update notifications
//     received (target: received ≥ keyctl-received, same queue size);
//   - events/s, keyctl-events/s, events/s-q1: those per second of storm
//     (keyctl block-buffers its output until it exits, so arrival times
//     cannot be compared; at most a queue's worth is read after the storm);
//   - loss-events, keyctl-loss-lines, loss-events-q1;
//   - unreported: storms where notifyd missed updates without a loss
//     event (target 0), both sizes;
//   - updates/s: the storm itself.
func BenchmarkKeyStorm(b *testing.B) {
	testenv.KernelFeature(b, watchqueue.HaveKeyNotifications(), "key notifications")
	testenv.LookPath(b, guest.KeyctlPath, "apt-get install -y keyutils")
	var rate, krate, rate1, got, kgot, got1, loss, kloss, loss1, unrep, upd float64
	for b.Loop() {
		k := keyctlWatch(b)
		n := notifyd(b, keyctlQueue)
		n1 := notifyd(b, 1)
		krate += float64(k.got) / k.stormDur.Seconds()
		rate += float64(n.got) / n.stormDur.Seconds()
		rate1 += float64(n1.got) / n1.stormDur.Seconds()
		kgot += float64(k.got)
		got += float64(n.got)
		got1 += float64(n1.got)
		kloss += float64(k.losses)
		loss += float64(n.losses)
		loss1 += float64(n1.losses)
		for _, p := range []phase{n, n1} {
			if p.got < storm && p.losses == 0 {
				unrep++
			}
		}
		upd += storm / n.stormDur.Seconds()
	}
	c := float64(b.N)
	b.ReportMetric(rate/c, "events/s")
	b.ReportMetric(krate/c, "keyctl-events/s")
	b.ReportMetric(rate1/c, "events/s-q1")
	b.ReportMetric(got/c, "received")
	b.ReportMetric(kgot/c, "keyctl-received")
	b.ReportMetric(got1/c, "received-q1")
	b.ReportMetric(loss/c, "loss-events")
	b.ReportMetric(kloss/c, "keyctl-loss-lines")
	b.ReportMetric(loss1/c, "loss-events-q1")
	b.ReportMetric(unrep/c, "unreported")
	b.ReportMetric(upd/c, "updates/s")
	if b.N > 0 {
		b.Logf("per storm of %d updates: notifyd received %.0f (256 notes) and %.0f (1 note), keyctl watch %.0f (256 notes)",
			storm, got/c, got1/c, kgot/c)
	}
}
