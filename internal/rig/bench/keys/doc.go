// Package keysbench measures notifyd's key source under a storm of key
// updates (KEYCTL_UPDATE as fast as one thread can) beside a reference
// peer with the same queue size on the same kind of storm: keyutils'
// "keyctl watch" at its only size (256 notes), and guest.KeyWatch — keyctl
// watch's read-and-print loop in Go with a settable queue — at 256 notes
// (to show it counts as keyctl does) and at 1 note, where keyctl cannot
// be set. It reports update notifications received per storm and loss,
// with notifyd reporting loss as loss events where the peers print
// "-- LOSS --". guest.KeyWatch runs in a process of its own, this test
// binary run again (TestMain).
//
// Key notifications need a kernel with CONFIG_WATCH_QUEUE and
// CONFIG_KEY_NOTIFICATIONS, so the measurement runs in the VM tier:
// BenchmarkVMKeyStorm (on the host) builds a guest initramfs holding this
// package's test binary, boots the watch_queue kernel from
// scripts/vm-kernel.sh under qemu, runs BenchmarkKeyStorm in the guest and
// reports the guest's figures as its own. The guest is emulated (TCG), so
// only the ratio to keyctl watch is meaningful, not the absolute rates.
// cmd/notifyd-bench runs it; docs/performance.md explains the figures.
package keysbench
