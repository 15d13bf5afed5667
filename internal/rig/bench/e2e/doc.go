// Package e2ebench measures notifyd's whole path with real kernel events:
// a synthetic "change" uevent written to a block device's sysfs uevent
// file, read by the uevent source (sources/uevent), turned into a block
// event by the block source (sources/block), published to the fan-out hub
// (fanout) and taken by a subscriber whose filter selects it
// (filter). The figure is the write→receive latency (p50/p99) at fixed
// rates of 1 000 and 10 000 events/s, absolute; a bare netlink reader of
// the same paced writes is measured in the same op for reference.
//
// BenchmarkCLIStorm and BenchmarkCLISingle measure the same path as a
// user meets it, beside its peer: the real notifyd and `notifyctl monitor
// --json` as processes, fed the same uevents at the same time as `udevadm
// monitor --kernel --property` (issue 16): events received, drain time
// and CPU under a storm of 20 000 changes, and single-event latency.
// They write to a loop device of their own, so that what they count is
// theirs.
//
// The benchmarks need root (they write to sysfs). The block device of
// BenchmarkKernelToSubscriber is NOTIFYD_BENCH_BLOCKDEV (a name under
// /sys/block), else zram0 or the first non-loop disk: loop devices are left
// alone because other tests use them. cmd/notifyd-bench runs them;
// docs/performance.md explains the figures.
package e2ebench
