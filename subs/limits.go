package subs

import (
	"fmt"
	"syscall"
	"time"
)

// Limits bound what clients may hold, across every transport together.
// Administrators (root, and the policy's admin users and groups) are not
// held to the per-user limits, and only they may use the reserve at the
// top of the totals. Zero fields take the defaults of DefaultLimits or
// are derived by Resolve.
type Limits struct {
	// MaxConnections is the total of connections (sockets, D-Bus peers,
	// key-watch attachments) the daemon serves at once. 0: derived from
	// RLIMIT_NOFILE by Resolve, so that the daemon cannot run out of file
	// descriptors because of its clients.
	MaxConnections int
	// AdminReserve is how many of MaxConnections, and of MaxSubscribers
	// (at most an eighth of them), only administrators may use. 0: a tenth
	// of MaxConnections, at least 4.
	AdminReserve int
	// MaxConnectionsPerUser caps one non-admin user's connections.
	MaxConnectionsPerUser int
	// MaxSubscribers caps subscriptions in total; MaxSubscribersPerUser
	// one non-admin user's.
	MaxSubscribers, MaxSubscribersPerUser int
	// QueueLen is the default queue depth of a subscription in events;
	// MaxQueueLen the largest a client may ask for.
	QueueLen, MaxQueueLen int
	// MaxQueueBytes caps the bytes one subscription may queue (0: no cap).
	MaxQueueBytes int
	// MaxQueueBytesPerUser caps the bytes all of one non-admin user's
	// subscriptions queue together (0: no cap). A subscription that would
	// go over it loses its oldest events, with a loss event, as when its
	// own queue is full.
	MaxQueueBytesPerUser int64
	// IdleTimeout ends a connection that has had no subscription for
	// this long since it was opened or since its last subscription ended
	// (0: never).
	IdleTimeout time.Duration
	// MaxHistory caps the events one history request returns.
	MaxHistory int
}

// File descriptors a connection costs the daemon: the socket, the peer's
// pidfd and the pidfd's duplicate in the core's exit watcher
// (lsm.ExitWatcher).
// FDReserve are kept for the daemon itself (listeners, kernel readers, the
// D-Bus connection, history files, the Go runtime).
const (
	FDsPerConn = 3
	FDReserve  = 256
)

// DefaultLimits are the documented defaults (docs/configuration.md).
func DefaultLimits() Limits {
	return Limits{
		MaxConnectionsPerUser: 64,
		MaxSubscribers:        1024,
		MaxSubscribersPerUser: 64,
		QueueLen:              4096,
		MaxQueueLen:           65536,
		MaxQueueBytes:         16 << 20,
		MaxQueueBytesPerUser:  64 << 20,
		IdleTimeout:           30 * time.Second,
		MaxHistory:            65536,
	}
}

// NoFile raises the soft RLIMIT_NOFILE to the hard limit (the Go runtime
// does so too on Linux; this makes it explicit and reports the result)
// and returns the soft limit in force.
func NoFile() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("get RLIMIT_NOFILE: %w", err)
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
		}
	}
	return r.Cur, nil
}

// Resolve fills the derived limits for a process whose RLIMIT_NOFILE is
// nofile, and the zero fields with DefaultLimits. An explicit
// MaxConnections larger than what nofile allows is lowered to it.
func (l Limits) Resolve(nofile uint64) Limits {
	d := DefaultLimits()
	fill := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	fill(&l.MaxConnectionsPerUser, d.MaxConnectionsPerUser)
	fill(&l.MaxSubscribers, d.MaxSubscribers)
	fill(&l.MaxSubscribersPerUser, d.MaxSubscribersPerUser)
	fill(&l.QueueLen, d.QueueLen)
	fill(&l.MaxQueueLen, d.MaxQueueLen)
	fill(&l.MaxHistory, d.MaxHistory)
	if l.QueueLen > l.MaxQueueLen {
		l.QueueLen = l.MaxQueueLen
	}
	budget := 16
	if nofile > FDReserve+16*FDsPerConn {
		budget = int(min((nofile-FDReserve)/FDsPerConn, 1<<30))
	}
	if l.MaxConnections <= 0 || l.MaxConnections > budget {
		l.MaxConnections = budget
	}
	if l.AdminReserve <= 0 {
		l.AdminReserve = max(l.MaxConnections/10, 4)
	}
	if l.AdminReserve >= l.MaxConnections {
		l.AdminReserve = l.MaxConnections / 2
	}
	return l
}

// subReserve is the part of MaxSubscribers kept for administrators.
func (l *Limits) subReserve() int {
	return min(l.AdminReserve, l.MaxSubscribers/8)
}
