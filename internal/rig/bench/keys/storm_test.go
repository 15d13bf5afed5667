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
	finish := startPeer(b, key, name, announces, command)
	time.Sleep(time.Second) // let the peer set up its watch (no way to ask keyctl)
	d := updates(b, key)
	invalidate(key) // the removal ends the peer, which flushes its output
	return finish(d)
}

// startPeer starts peer name watching key and returns, once the peer
// says it watches (when it announces), the function that waits for the
// peer to end after the key's removal and returns what it counted.
func startPeer(b *testing.B, key int, name string, announces bool, command func(ctx context.Context, key int) (*exec.Cmd, error)) (finish func(storm time.Duration) phase) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd, err := command(ctx, key)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
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
			cancel()
			b.Fatalf("%s ended before it watched the key", name)
		}
	}
	return func(storm time.Duration) phase {
		defer cancel()
		select {
		case <-read:
		case <-time.After(20 * time.Second):
			cmd.Process.Signal(syscall.SIGINT)
			<-read
		}
		if err := cmd.Wait(); err != nil && ctx.Err() == nil {
			b.Errorf("%s: %v", name, err)
		}
		p.stormDur = storm
		return p
	}
}

// keyctlWatch runs the storm past keyutils' "keyctl watch KEY".
func keyctlWatch(b *testing.B) phase { return peer(b, "keyctl", false, keyctlCommand) }

func keyctlCommand(ctx context.Context, key int) (*exec.Cmd, error) {
	return guest.KeyctlCommand(ctx, "watch", strconv.Itoa(key)), nil
}

// keyWatch runs the storm past guest.KeyWatch with a queue of notes notes.
func keyWatch(b *testing.B, notes int) phase {
	return peer(b, "keywatch", true, keyWatchCommand(notes))
}

func keyWatchCommand(notes int) func(ctx context.Context, key int) (*exec.Cmd, error) {
	return func(ctx context.Context, key int) (*exec.Cmd, error) {
		return guest.KeyWatchCommand(ctx, int32(key), notes)
	}
}

// notifyd runs the storm past the key source with a queue of size notes,
// publishing into a hub, to one subscriber.
func notifyd(b *testing.B, size int) phase {
	key := newKey(b, fmt.Sprintf("keysbench-notifyd-%d", time.Now().UnixNano()))
	defer invalidate(key)
	finish := startNotifyd(b, key, size)
	d := updates(b, key)
	invalidate(key)
	return finish(d)
}

// startNotifyd starts the key source watching key with a queue of size
// notes, publishing into a hub, to one subscriber that counts; once the
// source is live it returns the function that waits for the key's
// removal and returns what the subscriber counted.
func startNotifyd(b *testing.B, key, size int) (finish func(storm time.Duration) phase) {
	src := keys.New(keys.Config{Watch: []string{strconv.Itoa(key)}, QueueSize: size})
	hub := fanout.New(fanout.Config{})
	sub, _, err := hub.Subscribe(fanout.Options{QueueLen: 1 << 16})
	if err != nil {
		hub.Close()
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- src.Run(ctx, hub) }()
	stop := func() {
		cancel()
		if err := <-ran; err != nil {
			b.Error(err)
		}
		hub.Close()
	}
	for src.Health().State == event.HealthStarting {
		time.Sleep(time.Millisecond)
	}
	if h := src.Health(); h.State != event.HealthLive {
		stop()
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
	return func(storm time.Duration) phase {
		defer stop()
		select {
		case <-removed:
		case <-time.After(20 * time.Second):
			sub.Close()
			<-removed
		}
		p.stormDur = storm
		return p
	}
}

// together runs one storm past notifyd and a peer at once, both watching
// the same key with queues of the same size: each storm is then compared
// with itself, where the phases run in turn compare storms that each ran
// at their own speed.
func together(b *testing.B, size int, peerName string, announces bool, command func(ctx context.Context, key int) (*exec.Cmd, error)) (n, p phase) {
	key := newKey(b, fmt.Sprintf("keysbench-together-%d", time.Now().UnixNano()))
	defer invalidate(key)
	fp := startPeer(b, key, peerName, announces, command)
	fn := startNotifyd(b, key, size)
	time.Sleep(time.Second) // let keyctl watch set up its watch (no way to ask it)
	d := updates(b, key)
	invalidate(key)
	return fn(d), fp(d)
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
// Storms vary in speed by up to 2× from one to the next, and a faster
// storm overflows every watcher more; so the op then runs two more
// storms, each past notifyd and its same-size peer at once, both
// watching one key: keyctl watch and notifyd at 256 notes, guest.KeyWatch
// and notifyd at 1 note. Each of these compares a storm with itself.
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
//   - together-received, together-keyctl-received (256 notes),
//     together-received-q1, together-keywatch-received-q1 (1 note): the
//     storms watched by both at once, with their events/s and loss
//     counts as above;
//   - together-%-storms-won, together-%-storms-won-q1: of those storms,
//     the share in which notifyd received at least as many as the peer;
//   - unreported: storms where notifyd missed updates without a loss
//     event (target 0), all four of notifyd's;
//   - updates/s: the storm itself.
func BenchmarkKeyStorm(b *testing.B) {
	testenv.KernelFeature(b, watchqueue.HaveKeyNotifications(), "key notifications")
	testenv.LookPath(b, guest.KeyctlPath, "apt-get install -y keyutils")
	var k, w, n, w1, n1, tn, tk, tn1, tw1 sums
	var unrep, upd, tWins, tWins1 float64
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
		pt, kt := together(b, guest.KeyctlQueue, "keyctl", false, keyctlCommand)
		tn.add(pt)
		tk.add(kt)
		pt1, wt1 := together(b, 1, "keywatch", true, keyWatchCommand(1))
		tn1.add(pt1)
		tw1.add(wt1)
		if pt.got >= kt.got {
			tWins++
		}
		if pt1.got >= wt1.got {
			tWins1++
		}
		b.Logf("storm: together, same storm: at 256 notes: notifyd %d, keyctl watch %d; at 1 note: notifyd %d, keywatch %d",
			pt.got, kt.got, pt1.got, wt1.got)
		for _, p := range []phase{p, p1, pt, pt1} {
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
	tn.report(b, c, "together-received", "together-events/s", "together-loss-events")
	tk.report(b, c, "together-keyctl-received", "together-keyctl-events/s", "together-keyctl-loss-lines")
	tn1.report(b, c, "together-received-q1", "together-events/s-q1", "together-loss-events-q1")
	tw1.report(b, c, "together-keywatch-received-q1", "together-keywatch-events/s-q1", "together-keywatch-loss-lines-q1")
	b.ReportMetric(100*tWins/c, "together-%-storms-won")
	b.ReportMetric(100*tWins1/c, "together-%-storms-won-q1")
	b.ReportMetric(unrep/c, "unreported")
	b.ReportMetric(upd/c, "updates/s")
	if b.N > 0 {
		b.Logf("per storm of %d updates, received: 256 notes: notifyd %.0f, keyctl watch %.0f, keywatch %.0f; 1 note: notifyd %.0f, keywatch %.0f",
			storm, n.got/c, k.got/c, w.got/c, n1.got/c, w1.got/c)
		b.Logf("per storm of %d updates, together: 256 notes: notifyd %.0f, keyctl watch %.0f; 1 note: notifyd %.0f, keywatch %.0f",
			storm, tn.got/c, tk.got/c, tn1.got/c, tw1.got/c)
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
