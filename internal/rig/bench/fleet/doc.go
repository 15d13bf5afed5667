// Package fleetbench measures notifyd's fleet view end to end: simulated
// hosts (real forwarders fed by synthetic events, some in their own
// notifyd processes, the rest in the benchmark's process) publish through
// a three-node NATS JetStream cluster (embedded servers clustered on
// loopback, each in its own process) into one aggregator (notifyd fleet,
// its own process) and out to WebSocket subscribers. It prints latency
// host-publish → subscriber, events lost unreported, and the CPU and
// memory of the aggregator and of the NATS servers.
//
// It is a benchmark, run on purpose only (it takes about a minute and
// both cores):
//
//	go test -run '^$' -bench Fleet -benchtime 1x -v ./internal/rig/bench/fleet
//
// The environment tunes it: FLEETBENCH_HOSTS (1000), FLEETBENCH_RATE
// (events per second per host, 10), FLEETBENCH_SUBS (100),
// FLEETBENCH_PROCS (hosts in their own process, 20), FLEETBENCH_FILTER
// (the subscribers' filter, "" for everything), FLEETBENCH_MEASURE (30s),
// FLEETBENCH_WARMUP (10s). docs/fleet.md has the figures.
package fleetbench
