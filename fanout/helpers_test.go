package fanout_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/sources"
)

// *Hub is what sources publish into.
var _ sources.Sink = (*fanout.Hub)(nil)

// TestMain fails the package when a test leaves goroutines of ours behind
// (goroutines of the runtime, os/signal or the fuzzing engine are not ours).
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(5 * time.Second)
		leaked := ourGoroutines()
		for len(leaked) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			leaked = ourGoroutines()
		}
		if len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "leaked %d goroutines:\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// ourGoroutines returns the stacks of goroutines running this module's
// code, other than the one calling it.
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/notifyd/notifyd/") && !strings.Contains(g, "fanout_test.ourGoroutines") {
			out = append(out, g)
		}
	}
	return out
}

// matchFunc adapts a function to fanout.Matcher (filter.Filter is another
// package; these tests need only small predicates).
type matchFunc func(*event.Event) bool

func (f matchFunc) Match(ev *event.Event) bool { return f(ev) }

// tagIs matches events with tag t; loss events could always have matched.
func tagIs(t int) fanout.Matcher {
	return matchFunc(func(ev *event.Event) bool { return ev.Loss != nil || ev.Tag == t })
}

func newEv(tag int) *event.Event {
	return &event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, Tag: tag, Origin: event.OriginUevent}
}

func stateEv(key string, remove bool) *event.Event {
	ev := newEv(0)
	ev.StateKey, ev.StateRemove = key, remove
	if remove {
		ev.Subtype = event.USBRemove
	}
	return ev
}

func upstreamLoss(count uint64) *event.Event {
	return event.NewLoss(event.SourceUSB, event.OriginUevent, count, "test: netlink ENOBUFS")
}

// seqs renders what a subscriber got: "3" for an event, "L6[1-6]" for a
// loss of 6 covering seq 1..6, "L?[…]" for unknown count.
func seqs(evs []*event.Event) string {
	var b strings.Builder
	for i, ev := range evs {
		if i > 0 {
			b.WriteByte(' ')
		}
		if l := ev.Loss; l != nil {
			c := "?"
			if l.Known() {
				c = fmt.Sprint(l.Count)
			}
			fmt.Fprintf(&b, "L%s", c)
			if ev.Seq != 0 {
				fmt.Fprintf(&b, "@%d", ev.Seq)
			}
			if l.FromSeq != 0 || l.ToSeq != 0 {
				fmt.Fprintf(&b, "[%d-%d]", l.FromSeq, l.ToSeq)
			}
			continue
		}
		fmt.Fprint(&b, ev.Seq)
	}
	return b.String()
}

// checkIdentity asserts Delivered + Lost + Pending == Owed.
func checkIdentity(t testing.TB, st fanout.SubStats) {
	t.Helper()
	if st.Delivered+st.Lost+st.Pending != st.Owed {
		t.Errorf("sub %d: delivered %d + lost %d + pending %d != owed %d", st.ID, st.Delivered, st.Lost, st.Pending, st.Owed)
	}
}

func mustSub(t testing.TB, h *fanout.Hub, o fanout.Options) (*fanout.Subscription, fanout.Hello) {
	t.Helper()
	s, hello, err := h.Subscribe(o)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(s.Close)
	return s, hello
}

func publishN(h *fanout.Hub, n int, tag int) {
	for i := 0; i < n; i++ {
		h.Publish(newEv(tag))
	}
}
