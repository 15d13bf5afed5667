// Package subs is notifyd's subscription core: the one layer between the
// fan-out hub and the transports (WebSocket over the unix socket and
// loopback TCP, D-Bus, and so notifyctl) where every rule about who may
// subscribe to what, how much, and for how long is enforced. The
// transports only frame what it answers.
//
// # Connections
//
// A transport opens a Conn for every client connection it accepts (a
// socket, a D-Bus peer) with Core.Open, before it reads a byte of the
// client's request. Open counts the connection against the limits: per
// user, and a total budget derived from the process's RLIMIT_NOFILE of
// which a reserve is kept for administrators (root, admin users and
// groups), so that no unprivileged user can keep root from being served.
// A refusal is an *Error with Code Limit whose message names the limit.
//
// A Conn owns everything made through it. Conn.Close is idempotent and is
// meant to be run by whoever owns the connection when it ends, by any
// path (client close, protocol error, write timeout, peer death, daemon
// stop): it closes every subscription of the connection and every key
// watch tied to it, and gives the connection's share of the limits back.
// So a subscription cannot outlive its connection, whatever races the
// transport's goroutines run. The core ends a connection by itself when
// the peer process exits (its pidfd), when it never subscribed within
// Limits.IdleTimeout, and when the core closes: Conn.Done is closed and
// Peer.OnEnd is called, and the transport closes the connection.
//
// A transport that admits a socket before it knows who speaks on it (a
// loopback TCP connection whose HTTP request carries a browser session)
// opens the Conn with its default subject and narrows it with
// Conn.SetSubject, once, before anything is made through it; the
// connection stays counted against the account it was opened with and
// can only lose administrator standing.
//
// # Subscribing
//
// Conn.Subscribe parses and compiles the filter (bounded by the filter
// package's limits), derives the Watch target from it — the sources the
// filter can match — and asks the policy's Watch hook once per source,
// with the peer's real credentials. A subscription is refused when the
// hook allows none of them; otherwise it receives only the allowed ones
// (enforced for every event, beside the per-event Post hook), and the
// refused ones are listed in Sub.Denied so that the transport can say so.
// It then counts the subscription against the limits (per user, total
// with the admin reserve, and a per-user budget of queued bytes shared by
// all of the user's subscriptions; clients of unknown users are one such
// user) and registers it with the hub.
//
// # Kernel pushdown
//
// When Config.KernelFilter is set, the core derives the key notification
// queue's kernel filter from its registry of live subscriptions on every
// change: widened before a new subscription is registered, narrowed only
// after one has left, and "everything" whenever any subscription could
// match everything. Ranges of sequence numbers during which the kernel
// filter was narrower than a resuming (or snapshot) subscriber's filter
// are handed to the hub as explicit loss events (to subscribers the policy
// lets see key losses), so that a record the kernel did not deliver is
// never silently owed to anyone. The seqs published while the kernel
// filter changes count as covered only by what both filters let through.
// A subscription the kernel filter cannot be widened for (KernelFilter
// fails) and that the filter in force does not cover is refused with
// CodeInternal rather than silently owed less.
//
// # History and key watches
//
// Conn.History and Conn.AttachKeyWatch serve every transport that offers
// them, with the same Watch decision and the same limits. A history page
// (up to Limits.MaxHistory events) is read under the hub's lock and
// allocates the events it returns, so a non-admin user's requests read
// the hub one at a time (across all of the user's connections; clients of
// unknown users share one turn): a user asking on many connections at
// once makes the others wait, not the publishers and not other users.
//
// Peer exits are watched by one lsm.ExitWatcher per core: one epoll
// instance on the runtime poller and one goroutine for all connections,
// which exist only while some connection or detached key watch is
// watched; Core.Close closes it and ends every connection. Besides it the package starts only the OnEnd calls
// and the idle timers.
package subs
