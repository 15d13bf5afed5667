package main

const mod = "github.com/notifyd/notifyd/"

// Packages holding the benchmarks.
const (
	ingestPkg = mod + "internal/rig/bench/ingest"
	fanoutPkg = mod + "fanout"
	webPkg    = mod + "web"
	dbusPkg   = mod + "dbusapi"
	ueventPkg = mod + "internal/rig/bench/uevent"
	e2ePkg    = mod + "internal/rig/bench/e2e"
	keysPkg   = mod + "internal/rig/bench/keys"
	wsPkg     = mod + "internal/rig/bench/ws"
)

// Per-stage -benchtime: these benchmarks take b.N as a number of events
// per phase (web, dbusapi) or do one fixed burst or paced run per op.
const (
	webBenchtime  = "2000x"
	dbusBenchtime = "5000x"
	// webBenchtime1 is web's with one client: 2000 events were ten
	// windows of the closed loop, a few milliseconds per server, split
	// into eight rounds: the figure was start-up and noise. 100 000
	// events take ≈ 0.2 s per server.
	webBenchtime1 = "100000x"
)

// wsExtra are the further metrics of web's BenchmarkDelivery: besides
// latency and RSS, what each server did per frame and per write(2), and
// the process's CPU per delivery during each server's rounds.
var wsExtra = []string{"events/s", "p50-µs", "p99-µs", "fair-p50-µs", "fair-p99-µs", "naive-p50-µs", "naive-p99-µs",
	"rate-p50-µs", "rate-p99-µs", "rss-KB/client", "fair-rss-KB/client", "frames/delivery",
	"events/frame", "fair-events/frame", "events/write", "fair-events/write", "cpu-ns/delivery", "fair-cpu-ns/delivery"}

// fixedRateExtra are the further metrics of wsbench's BenchmarkFixedRate:
// the fair ceiling's latency, and notifyd's latency from publish to each
// stage of its path (hub enqueue → writer wake → frame written → client
// read).
var fixedRateExtra = []string{"p50-µs", "max-µs", "ceil-p50-µs", "ceil-p99-µs", "wake-p50-µs", "wake-p99-µs",
	"written-p50-µs", "written-p99-µs", "events/frame", "ceil-events/s", "ceil-lost"}

// burstExtra are the further metrics of ueventbench's BenchmarkBurst.
var burstExtra = []string{"p50-µs", "p99-µs", "bare-p50-µs", "bare-p99-µs", "writes/s", "bare-writes/s",
	"lost/burst", "kernel-lost/burst", "reported-lost/burst", "loss-events/burst", "overreported/burst"}

// burstChecks encode "no event lost by notifyd below the kernel's own
// loss": nothing lost silently, nothing dropped by notifyd's queues, no
// more lost than the bare reader lost in the same op.
var burstChecks = []check{
	{Metric: "unreported/burst", Limit: 0},
	{Metric: "dropped/burst", Limit: 0},
	{Metric: "excess-lost/burst", Limit: 0},
}

// hubValid: both sides drop for a consumer that falls behind instead of
// blocking the publisher (the hub reports it, the channel loop does not),
// so the loss rates are printed beside the times; nothing is asserted.
var hubValid []check

// stages is the measured path, in the order events travel (issue 10's
// Measure table), with the targets of its Targets list.
var stages = []stage{
	{Name: "queue read + decode", Pkg: ingestPkg, Bench: "BenchmarkQueueDecode", Ceiling: "BenchmarkPipeCeiling", Metric: "records/s",
		Extra: []string{"allocs/op"}},
	{Name: "ingest (read+decode+stamp+publish)", Pkg: ingestPkg, Bench: "BenchmarkIngest", Ceiling: "BenchmarkPipeCeiling", Metric: "records/s",
		Target: 0.5, Extra: []string{"allocs/record", "%-delivered", "drained-ns/record"},
		Note: "a storm on one key into the hub and one subscriber that drains into memory it owns (DrainBatch)"},
	{Name: "ingest, no two records alike", Pkg: ingestPkg, Bench: "BenchmarkIngestMixed", Ceiling: "BenchmarkPipeCeiling", Metric: "records/s",
		Extra: []string{"allocs/record", "%-delivered"}, Note: "BenchmarkIngest with every record unlike the one before: no runs"},
	{Name: "ingest, source and hub (no subscriber)", Pkg: ingestPkg, Bench: "BenchmarkIngestHub", Ceiling: "BenchmarkPipeCeiling", Metric: "records/s",
		Extra: []string{"allocs/record"}},
	{Name: "ingest, key source alone (no hub)", Pkg: ingestPkg, Bench: "BenchmarkIngestSource", Ceiling: "BenchmarkPipeCeiling", Metric: "records/s",
		Extra: []string{"allocs/record"}, Note: "keys.Ingest into a sink that only counts: the source's share of the ingest path"},

	// Hub: figure and ceiling (a bare channel fan-out loop) run in the
	// same op; both report wall ns per published event. Filters match
	// half the events, so N subscribers take N/2 deliveries per event.
	{Name: "hub to 1 filtered subscriber", Pkg: fanoutPkg, Bench: "BenchmarkPublishDeliver/subs=1", Metric: "hub-ns/event", CeilMetric: "chan-ns/event",
		Lower: true, Extra: []string{"deliv/s", "allocs/event", "lost%", "chan-lost%"}, Checks: hubValid},
	{Name: "hub to 100 filtered subscribers", Pkg: fanoutPkg, Bench: "BenchmarkPublishDeliver/subs=100", Metric: "hub-ns/event", CeilMetric: "chan-ns/event",
		Lower: true, Extra: []string{"deliv/s", "allocs/event", "lost%", "chan-lost%"}, Checks: hubValid},
	{Name: "hub to 1000 filtered subscribers", Pkg: fanoutPkg, Bench: "BenchmarkPublishDeliver/subs=1000", Metric: "hub-ns/event", CeilMetric: "chan-ns/event",
		Lower: true, Target: 0.5, Extra: []string{"deliv/s", "allocs/event", "lost%", "chan-lost%"},
		Checks: append([]check{{Metric: "allocs/event", Per: 500, As: "allocs/delivery", Limit: 0.01}}, hubValid...)},

	// WebSocket: web's BenchmarkDelivery runs notifyd's server and two
	// bare gorilla servers (internal/rig/bench/ws.Ceiling) with the same
	// clients: the fair ceiling (chat-example coalescing, write-buffer
	// pool), which the target is stated against, and the naive one (one
	// frame per event), the strawman of earlier runs, kept as a second
	// line for history.
	{Name: "WebSocket to 1 client", Pkg: webPkg, Bench: "BenchmarkDelivery/N=1", Metric: "deliveries/s", CeilMetric: "fair-deliveries/s",
		Target: 1, Extra: wsExtra, Benchtime: webBenchtime1},
	{Name: "WebSocket to 100 clients", Pkg: webPkg, Bench: "BenchmarkDelivery/N=100", Metric: "deliveries/s", CeilMetric: "fair-deliveries/s",
		Target: 1, Extra: wsExtra, Benchtime: webBenchtime},
	{Name: "WebSocket to 1000 clients", Pkg: webPkg, Bench: "BenchmarkDelivery/N=1000", Metric: "deliveries/s", CeilMetric: "fair-deliveries/s",
		Target: 1, Extra: wsExtra, Benchtime: webBenchtime},
	{Name: "WebSocket to 1 client (naive ceiling, history)", Pkg: webPkg, Bench: "BenchmarkDelivery/N=1", Metric: "deliveries/s", CeilMetric: "naive-deliveries/s",
		Benchtime: webBenchtime1, Note: "history: the strawman ceiling of earlier runs"},
	{Name: "WebSocket to 100 clients (naive ceiling, history)", Pkg: webPkg, Bench: "BenchmarkDelivery/N=100", Metric: "deliveries/s", CeilMetric: "naive-deliveries/s",
		Benchtime: webBenchtime, Note: "history: the strawman ceiling of earlier runs"},
	{Name: "WebSocket to 1000 clients (naive ceiling, history)", Pkg: webPkg, Bench: "BenchmarkDelivery/N=1000", Metric: "deliveries/s", CeilMetric: "naive-deliveries/s",
		Benchtime: webBenchtime, Note: "history: the strawman ceiling of earlier runs"},
	// The fixed-rate latency target, beside the fair ceiling's p99 at the
	// same rate, with where notifyd's milliseconds go (fixedRateExtra).
	{Name: "WebSocket at 10 k events/s to 100 clients", Pkg: wsPkg, Bench: "BenchmarkFixedRate/N=100,rate=10000", Metric: "p99-µs",
		CeilMetric: "ceil-p99-µs", Lower: true, Extra: fixedRateExtra, Benchtime: "1x",
		Checks: []check{{Metric: "p99-µs", Limit: 5000}, {Metric: "lost", Limit: 0}, {Metric: "events/s", Limit: 9500, AtLeast: true}}},
	{Name: "WebSocket RSS per idle client (1000, in-process server)", Pkg: wsPkg, Bench: "BenchmarkIdleRSS", Metric: "rss-KiB/client",
		CeilMetric: "bare-rss-KiB/client", Lower: true, Benchtime: "1x",
		Checks: []check{{Metric: "rss-KiB/client", Limit: 20}}},
	// The real daemon (cmd/notifyd built and started), 1000 idle
	// subscribed clients in another process.
	{Name: "WebSocket RSS per idle client, real daemon, unix socket", Pkg: wsPkg, Bench: "BenchmarkDaemonIdleRSS/transport=unix",
		Metric: "rss-KiB/client", Lower: true, Benchtime: "1x", Checks: []check{{Metric: "rss-KiB/client", Limit: 20}}},
	{Name: "WebSocket RSS per idle client, real daemon, TCP", Pkg: wsPkg, Bench: "BenchmarkDaemonIdleRSS/transport=tcp",
		Metric: "rss-KiB/client", Lower: true, Benchtime: "1x", Checks: []check{{Metric: "rss-KiB/client", Limit: 20}}},

	// notifyctl beside udevadm monitor --kernel --property: the real
	// daemon and both clients as processes, fed the same uevents.
	{Name: "notifyctl vs udevadm, 20 000-uevent storm: received", Pkg: e2ePkg, Bench: "BenchmarkCLIStorm", Metric: "received-%",
		CeilMetric: "udevadm-received-%", Target: 1, Extra: []string{"drain-ms", "udevadm-drain-ms"}, Benchtime: "1x",
		Checks: []check{{Metric: "incomplete-when-udevadm-complete", Limit: 0}}},
	{Name: "notifyctl vs udevadm, storm: CPU (notifyd + notifyctl)", Pkg: e2ePkg, Bench: "BenchmarkCLIStorm", Metric: "cpu-ms",
		CeilMetric: "udevadm-cpu-ms", Lower: true, Extra: []string{"notifyd-cpu-ms"}, Benchtime: "1x",
		Checks: []check{{Metric: "cpu-ratio", Limit: 1.5}}},
	{Name: "notifyctl vs udevadm, single events 10 ms apart: p50", Pkg: e2ePkg, Bench: "BenchmarkCLISingle", Metric: "p50-µs",
		CeilMetric: "udevadm-p50-µs", Lower: true, Target: 1, Extra: []string{"p99-µs", "udevadm-p99-µs", "received", "udevadm-received"},
		Benchtime: "1x"},

	// D-Bus: dbusapi's benchmark runs the service and a raw emitter of
	// pre-encoded signals through the same dbus-daemon, to raw receivers.
	{Name: "D-Bus unicast to 1 subscriber", Pkg: dbusPkg, Bench: "BenchmarkIntegrationUnicast/subs=1", Metric: "signals/s", CeilMetric: "raw-signals/s",
		Target: 0.9, Extra: []string{"p99-µs"}, Benchtime: dbusBenchtime},
	{Name: "D-Bus unicast to 50 subscribers", Pkg: dbusPkg, Bench: "BenchmarkIntegrationUnicast/subs=50", Metric: "signals/s", CeilMetric: "raw-signals/s",
		Target: 0.9, Extra: []string{"p99-µs"}, Benchtime: dbusBenchtime},

	// uevent source under a burst of 20 000, beside a bare netlink reader.
	{Name: "uevent burst, kernel-default buffer", Pkg: ueventPkg, Bench: "BenchmarkBurst/rcvbuf=kernel-default", Metric: "events/s", CeilMetric: "bare-events/s",
		Extra: burstExtra, Checks: burstChecks, Benchtime: "2x"},
	{Name: "uevent burst, 8 MiB buffer (default)", Pkg: ueventPkg, Bench: "BenchmarkBurst/rcvbuf=8MiB", Metric: "events/s", CeilMetric: "bare-events/s",
		Extra: burstExtra, Checks: burstChecks, Benchtime: "2x"},

	// End to end, real kernel events: absolute latency.
	{Name: "end to end, 1 k events/s", Pkg: e2ePkg, Bench: "BenchmarkKernelToSubscriber/rate=1000", Metric: "p99-µs",
		Extra:  []string{"p50-µs", "max-µs", "bare-p50-µs", "bare-p99-µs", "events/s", "loss-events"},
		Checks: []check{{Metric: "lost", Limit: 0}}, Benchtime: "1x"},
	{Name: "end to end, 10 k events/s", Pkg: e2ePkg, Bench: "BenchmarkKernelToSubscriber/rate=10000", Metric: "p99-µs",
		Extra:  []string{"p50-µs", "max-µs", "bare-p50-µs", "bare-p99-µs", "events/s", "loss-events"},
		Checks: []check{{Metric: "lost", Limit: 0}}, Benchtime: "1x"},

	// Keys in the VM: the host benchmark boots the watch_queue kernel and
	// runs the storm in the guest (emulated: compare the ratio only).
	{Name: "keys in the VM (keyctl update storm)", Pkg: keysPkg, Bench: "BenchmarkVMKeyStorm", Metric: "events/s", CeilMetric: "keyctl-events/s",
		Target: 1, Extra: []string{"received", "keyctl-received", "keywatch-received", "received-q1", "keywatch-received-q1",
			"loss-events", "keyctl-loss-lines", "loss-events-q1", "keywatch-loss-lines-q1", "updates/s"},
		Checks: []check{{Metric: "unreported", Limit: 0}}, Benchtime: "1x"},
}
