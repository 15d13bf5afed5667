// Package feature holds ErrNotSupported, the one sentinel every layer of
// notifyd uses for "this kernel (or this daemon) cannot do it", after
// cilium/ebpf's internal.ErrNotSupported. It is a leaf: the kernel
// readers return errors that match it (watchqueue.ErrNotSupported is this
// same value), and the subscription core and the transports test for it
// without linking any kernel-facing package.
package feature

import "errors"

// ErrNotSupported is matched (errors.Is) by every error that means a
// feature is missing: a kernel built without CONFIG_WATCH_QUEUE (ENOPKG),
// without key notifications (EOPNOTSUPP), too old, or a daemon started
// without the source a request needs. Such errors also unwrap to the
// errno when there is one.
var ErrNotSupported = errors.New("not supported by this kernel")
