package scenarios

import (
	"fmt"
	"testing"
)

// The filters the subscribers of TestKernelFilterOrders use, each with the
// reference records it matches. Every reference record is a key event
// (source key, origin watch_queue; removal records are source key,
// subtype "removal"), so these simple filters are judged by subtype and
// tag alone.
var (
	kfEverything = kfFilter{"", func(kfRef) bool { return true }}
	kfRevoked    = kfFilter{`source == key && subtype == "revoked"`, func(r kfRef) bool { return r.Subtype == "revoked" }}
	kfBlockOnly  = kfFilter{`source == block`, func(kfRef) bool { return false }}
	kfTag3       = kfFilter{`tag == 3`, func(r kfRef) bool { return r.Tag == 3 }}
	kfUpdated    = kfFilter{`subtype == "updated"`, func(r kfRef) bool { return r.Subtype == "updated" }}
	kfSetattr    = kfFilter{`subtype == "setattr"`, func(r kfRef) bool { return r.Subtype == "setattr" }}
)

// TestKernelFilterOrders runs the real daemon in process with
// sources.key_kernel_filter = true, so that it narrows its key
// notification queue's kernel filter (IOC_WATCH_QUEUE_SET_FILTER) to what
// live subscriptions want, and checks, for subscribers with narrow, empty
// and changing filters joining and leaving in different orders, that every
// subscriber receives every key record its filter matches, or an explicit
// loss event covering it. No silent loss, whatever the order.
//
// Each case gets a fresh daemon watching a fresh keyring A (tag 1), a user
// key K in it (tag 2) and a keyring B (tag 3). The ground truth is a raw
// notification pipe with no filter watching the same three with the same
// tags (helpers_test.go), and beside it an unfiltered "keyctl watch K"
// (keyutils) whose counts must agree with the pipe. The key operations of
// a full round: add a user key to B (linked), update K 20 times, setperm K
// (setattr), revoke K, unlink K from A (unlinked), clear B (cleared), and
// the removal record when the garbage collector (gc_delay 1) destroys K.
//
// Subscribers are WebSocket clients on the daemon's unix socket
// (docs/websocket.md), so the test depends only on the daemon's public
// behaviour, not on how it derives the kernel filter.
func TestKernelFilterOrders(t *testing.T) {
	requireWatchQueue(t)
	setGCDelay(t, 1)

	cases := []struct {
		name string
		what string
		run  func(h *kfHarness)
	}{{
		name: "a-narrow-then-empty",
		what: "narrow joins, then an unfiltered subscriber joins, then the key operations",
		run: func(h *kfHarness) {
			h.join("narrow", kfRevoked)
			h.join("empty", kfEverything)
			h.ops(kfRoundAll)
		},
	}, {
		name: "b-empty-narrow-empty-leaves",
		what: "unfiltered joins, narrow joins, unfiltered leaves (the kernel filter may now be narrow), operations, another unfiltered joins, operations",
		run: func(h *kfHarness) {
			h.join("empty", kfEverything)
			h.join("narrow", kfRevoked)
			h.leave("empty")
			h.ops(kfRoundFirst)
			// A newcomer after the narrowing gets everything that
			// happens from its join on, and narrow its revoked record.
			h.join("empty-late", kfEverything)
			h.ops(kfRoundLast)
		},
	}, {
		name: "c-narrow-ops-then-empty-resumes",
		what: "narrow joins, the key operations run, then an unfiltered subscriber resumes from before them",
		run: func(h *kfHarness) {
			h.join("narrow", kfRevoked)
			before := h.position()
			h.ops(kfRoundAll)
			h.joinSince("empty-resumed", kfEverything, before)
			h.settle()
		},
	}, {
		name: "d-block-and-tag-churn-beside-empty",
		what: "block-only and tag==3 subscribers join, an unfiltered one joins, then block-only and tag==3 subscribers join and leave while the key operations run",
		run: func(h *kfHarness) {
			h.join("block", kfBlockOnly)
			h.join("tag3", kfTag3)
			h.join("empty", kfEverything)
			h.opsWhile(kfRoundAll, func(i int) {
				b := h.joinUnchecked(fmt.Sprintf("churn-block-%d", i), kfBlockOnly)
				g := h.joinUnchecked(fmt.Sprintf("churn-tag3-%d", i), kfTag3)
				h.leaveSub(b)
				h.leaveSub(g)
			})
			h.leave("block")
			h.leave("tag3")
		},
	}, {
		name: "e-updated-leaves-first",
		what: `subtype == "updated" and subtype == "setattr" join, operations, "updated" leaves, operations`,
		run: func(h *kfHarness) {
			h.join("updated", kfUpdated)
			h.join("setattr", kfSetattr)
			h.ops(kfRoundFirst)
			h.leave("updated")
			h.ops(kfRoundLast)
		},
	}, {
		name: "e-setattr-leaves-first",
		what: `subtype == "updated" and subtype == "setattr" join, operations, "setattr" leaves, operations`,
		run: func(h *kfHarness) {
			h.join("updated", kfUpdated)
			h.join("setattr", kfSetattr)
			h.ops(kfRoundFirst)
			h.leave("setattr")
			h.ops(kfRoundLast)
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Logf("order: %s", c.what)
			h := newKFHarness(t, c.name)
			c.run(h)
			h.finish()
		})
	}
}
