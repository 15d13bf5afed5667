package relay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
)

func TestFullQueueIsExactLoss(t *testing.T) {
	var h Hub[int]
	h.Origin = event.OriginUevent
	slow := h.Subscribe(nil, 4)
	even := h.Subscribe(func(v int) bool { return v%2 == 0 }, 100)
	for i := range 10 {
		h.Send(i)
	}
	ctx := context.Background()
	var got []int
	for range 4 {
		it, err := slow.Next(ctx)
		if err != nil || it.Loss != nil {
			t.Fatalf("item %+v %v", it, err)
		}
		got = append(got, it.V)
	}
	if got[0] != 0 || got[3] != 3 {
		t.Errorf("kept %v, want the first four", got)
	}
	it, err := slow.Next(ctx)
	if err != nil || it.Loss == nil || it.Loss.Count != 6 || it.Loss.Estimated || it.Loss.Origin != event.OriginUevent {
		t.Fatalf("want a loss of exactly 6, got %+v %v", it.Loss, err)
	}
	for _, want := range []int{0, 2, 4, 6, 8} {
		it, _ := even.Next(ctx)
		if it.V != want {
			t.Fatalf("filtered subscriber got %+v, want %d", it, want)
		}
	}
}

func TestUpstreamLossReachesEveryone(t *testing.T) {
	var h Hub[string]
	a := h.Subscribe(func(string) bool { return false }, 1)
	b := h.Subscribe(nil, 1)
	h.Send("x") // fills b
	h.SendLoss(Loss{Origin: event.OriginKmsg, Count: 5, Reason: "ring overwrote"})
	h.SendLoss(Loss{Origin: event.OriginKmsg, Count: event.CountUnknown, Reason: "reopened"})
	ctx := context.Background()
	it, _ := a.Next(ctx)
	if it.Loss == nil || it.Loss.Count != 5 {
		t.Fatalf("a: %+v", it)
	}
	it, _ = a.Next(ctx)
	if it.Loss == nil || it.Loss.Count != event.CountUnknown {
		t.Fatalf("a second: %+v", it.Loss)
	}
	it, _ = b.Next(ctx)
	if it.V != "x" {
		t.Fatalf("b: %+v", it)
	}
	it, _ = b.Next(ctx)
	if it.Loss == nil || it.Loss.Count != event.CountUnknown || it.Loss.Reason != "ring overwrote; reopened" {
		t.Fatalf("b merged loss: %+v", it.Loss)
	}
}

func TestNextBlocksAndStops(t *testing.T) {
	var h Hub[int]
	s := h.Subscribe(nil, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on empty: %v", err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		h.Send(7)
	}()
	if it, err := s.Next(context.Background()); err != nil || it.V != 7 {
		t.Fatalf("Next: %+v %v", it, err)
	}
	go s.Close()
	if _, err := s.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if h.Len() != 0 {
		t.Errorf("%d subscribers after Close", h.Len())
	}
	if d := h.Send(1); d != 0 {
		t.Errorf("send after close dropped %d", d)
	}
}

func BenchmarkSend(b *testing.B) {
	var h Hub[int]
	s1 := h.Subscribe(nil, 1<<20)
	s2 := h.Subscribe(func(v int) bool { return v&1 == 0 }, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, s := range []*Sub[int]{s1, s2} {
		go func() {
			for {
				if _, err := s.Next(ctx); err != nil {
					return
				}
			}
		}()
	}
	b.ResetTimer()
	for i := range b.N {
		h.Send(i)
	}
}

// TestLossKeepsItsPlace: a loss is reported where it happened, after the
// values queued before the drop and before those queued after it, even
// when the consumer has made room meanwhile (docs/sources.md, "Loss
// accounting": the loss comes "once it has taken what was queued before
// the drop"). A second drop after more values were queued is a second
// loss in its own place.
func TestLossKeepsItsPlace(t *testing.T) {
	var h Hub[int]
	h.Origin = event.OriginUevent
	s := h.Subscribe(nil, 2)
	// A cancelled context: Next returns what is there and never waits.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	next := func() string {
		t.Helper()
		it, err := s.Next(ctx)
		if err != nil {
			return "none"
		}
		if it.Loss != nil {
			return fmt.Sprintf("loss(%d)", it.Loss.Count)
		}
		return strconv.Itoa(it.V)
	}
	var got []string
	h.Send(1)
	h.Send(2)
	h.Send(3) // dropped: the queue holds 1 and 2
	got = append(got, next())
	h.Send(4) // queued after the drop
	h.Send(5) // dropped
	got = append(got, next(), next(), next(), next())
	h.Send(6)
	got = append(got, next())
	want := "1 2 loss(1) 4 loss(1) 6"
	if g := strings.Join(got, " "); g != want {
		t.Fatalf("got %s, want %s", g, want)
	}
}
