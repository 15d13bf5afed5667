package keysbench_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/vm/guest"
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
	// Possessor and user may do all, so that the storm's process may
	// update it whether or not it possesses it.
	if err := unix.KeyctlSetperm(id, 0x3f3f0000); err != nil {
		b.Fatalf("set key permissions: %v", err)
	}
	return id
}

// envStorm, set to a key serial, makes the test binary run the storm on
// that key, print its duration in nanoseconds and exit (TestMain).
const envStorm = "NOTIFYD_KEYSTORM"

// updates runs the storm on key in a process of its own, so that every
// watcher — keyctl watch, guest.KeyWatch, notifyd in this process — has
// its process to itself, and returns how long the storm took.
func updates(b *testing.B, key int) time.Duration {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), envStorm+"="+strconv.Itoa(key))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("storm: %v", err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		b.Fatalf("storm: %q: %v", out, err)
	}
	return time.Duration(ns)
}

// runStorm is the storm's process: storm KEYCTL_UPDATEs on key.
func runStorm(key string) error {
	id, err := strconv.Atoi(key)
	if err != nil {
		return fmt.Errorf("%s: %w", envStorm, err)
	}
	payload := []byte("payload")
	start := time.Now()
	for range storm {
		if _, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, id, payload, 0); err != nil {
			return fmt.Errorf("update key: %w", err)
		}
	}
	fmt.Println(time.Since(start).Nanoseconds())
	return nil
}

func invalidate(key int) { unix.KeyctlInt(unix.KEYCTL_INVALIDATE, key, 0, 0, 0) }

// peer runs the storm past a reference peer that prints one line per
// record, as keyutils' "keyctl watch KEY" does, and counts the lines it
// writes to a pipe read here: keyctl watch itself (its queue is always
// guest.KeyctlQueue notes), or guest.KeyWatch, the same reader with a
// queue of the size asked for, which announces its watch (announces:
// the storm waits for the line guest.Watching). The last lines arrive
// when the peer exits, after the key's removal.
func peer(b *testing.B, name string, announces bool, command func(ctx context.Context, key int) (*exec.Cmd, error)) phase {
	key := newKey(b, fmt.Sprintf("keysbench-%s-%d", name, time.Now().UnixNano()))
	defer invalidate(key)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, err := command(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	var p phase
	prefix := strconv.Itoa(key) + " "
	read := make(chan struct{})
	watching := make(chan struct{}) // closed by guest.KeyWatch's first line
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			switch {
			case l == guest.Watching:
				close(watching)
			case strings.Contains(l, "LOSS"):
				p.losses++
			case strings.HasPrefix(l, prefix) && !strings.HasSuffix(l, " gc") && !strings.HasSuffix(l, " inv"):
				p.got++
			}
		}
	}()
	if announces {
		select {
		case <-watching:
		case <-read:
			b.Fatalf("%s ended before it watched the key", name)
		}
	}
	time.Sleep(time.Second) // let the peer set up its watch (no way to ask keyctl)
	d := updates(b, key)
	invalidate(key) // the removal ends the peer, which flushes its output
	select {
	case <-read:
	case <-time.After(20 * time.Second):
		cmd.Process.Signal(syscall.SIGINT)
		<-read
	}
	if err := cmd.Wait(); err != nil && ctx.Err() == nil {
		b.Errorf("%s: %v", name, err)
	}
	p.stormDur = d
	return p
}

// keyctlWatch runs the storm past keyutils' "keyctl watch KEY".
func keyctlWatch(b *testing.B) phase {
	return peer(b, "keyctl", false, func(ctx context.Context, key int) (*exec.Cmd, error) {
		return guest.KeyctlCommand(ctx, "watch", strconv.Itoa(key)), nil
	})
}

// keyWatch runs the storm past guest.KeyWatch with a queue of notes notes.
func keyWatch(b *testing.B, notes int) phase {
	return peer(b, "keywatch", true, func(ctx context.Context, key int) (*exec.Cmd, error) {
		return guest.KeyWatchCommand(ctx, int32(key), notes)
	})
}

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
	d := updates(b, key)
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

// TestMain lets the test binary run as guest.KeyWatch's peer process or
// as the storm's.
func TestMain(m *testing.M) {
	guest.KeyWatchPeer()
	if key, ok := os.LookupEnv(envStorm); ok {
		if err := runStorm(key); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkKeyStorm (guest only) runs a storm of 20 000 key updates past
// each watcher in turn, on fresh keys, and prints the counts side by side,
// each beside a peer with the same queue size:
//
//   - 256 notes: keyutils' keyctl watch (its only size), notifyd's key
//     source → hub → subscriber, and guest.KeyWatch (keyctl watch's loop
//     in Go, to show it counts as keyctl does);
//   - 1 note (the kernel rounds it up to one page, 32 notes): notifyd and
//     guest.KeyWatch, since keyctl watch cannot be set to it.
//
// The storm runs in a process of its own, so that each watcher has its
// process (notifyd: this one) to itself.
//
// Reported per storm, averaged over the ops:
//
//   - received, keyctl-received, keywatch-received; received-q1,
//     keywatch-received-q1: update notifications received (target:
//     notifyd's ≥ the peer's of the same queue size);
//   - events/s, keyctl-events/s, events/s-q1, keywatch-events/s-q1: those
//     per second of storm (the peers' output is read as it comes, but
//     keyctl may block-buffer it until it exits, so arrival times cannot be
//     compared; at most a queue's worth is read after the storm);
//   - loss-events, keyctl-loss-lines, keywatch-loss-lines, loss-events-q1,
//     keywatch-loss-lines-q1;
//   - unreported: storms where notifyd missed updates without a loss
//     event (target 0), both sizes;
//   - updates/s: the storm itself.
func BenchmarkKeyStorm(b *testing.B) {
	testenv.KernelFeature(b, watchqueue.HaveKeyNotifications(), "key notifications")
	testenv.LookPath(b, guest.KeyctlPath, "apt-get install -y keyutils")
	var k, w, n, w1, n1 sums
	var unrep, upd float64
	for b.Loop() {
		k.add(keyctlWatch(b))
		w.add(keyWatch(b, guest.KeyctlQueue))
		p := notifyd(b, guest.KeyctlQueue)
		n.add(p)
		upd += storm / p.stormDur.Seconds()
		w1.add(keyWatch(b, 1))
		p1 := notifyd(b, 1)
		n1.add(p1)
		b.Logf("storm: received at 256 notes: notifyd %d, keyctl watch %d, keywatch %d; at 1 note: notifyd %d, keywatch %d",
			p.got, k.last.got, w.last.got, p1.got, w1.last.got)
		for _, p := range []phase{p, p1} {
			if p.got < storm && p.losses == 0 {
				unrep++
			}
		}
	}
	c := float64(b.N)
	n.report(b, c, "received", "events/s", "loss-events")
	k.report(b, c, "keyctl-received", "keyctl-events/s", "keyctl-loss-lines")
	w.report(b, c, "keywatch-received", "keywatch-events/s", "keywatch-loss-lines")
	n1.report(b, c, "received-q1", "events/s-q1", "loss-events-q1")
	w1.report(b, c, "keywatch-received-q1", "keywatch-events/s-q1", "keywatch-loss-lines-q1")
	b.ReportMetric(unrep/c, "unreported")
	b.ReportMetric(upd/c, "updates/s")
	if b.N > 0 {
		b.Logf("per storm of %d updates, received: 256 notes: notifyd %.0f, keyctl watch %.0f, keywatch %.0f; 1 note: notifyd %.0f, keywatch %.0f",
			storm, n.got/c, k.got/c, w.got/c, n1.got/c, w1.got/c)
	}
}

// sums adds up one watcher's phases over the ops.
type sums struct {
	got, rate, losses float64
	last              phase
}

func (s *sums) add(p phase) {
	s.last = p
	s.got += float64(p.got)
	s.rate += float64(p.got) / p.stormDur.Seconds()
	s.losses += float64(p.losses)
}

func (s *sums) report(b *testing.B, ops float64, got, rate, losses string) {
	b.ReportMetric(s.got/ops, got)
	b.ReportMetric(s.rate/ops, rate)
	b.ReportMetric(s.losses/ops, losses)
}
