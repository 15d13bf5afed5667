// Package ingestbench measures notifyd's ingest path — reading records
// from a pipe, decoding them, turning them into events and publishing them
// to the hub — beside the bare read loop that is its ceiling, in the same
// run. The host kernel has no notification pipes, so the records travel
// through an ordinary pipe: BenchmarkIngest hands it to the key source's
// own ingest (keys.Ingest: batch slab, describe cache of a real key,
// interned state keys, mapping by eventrec) and prints its rate as a
// percentage of the ceiling and the heap allocations per record.
// BenchmarkHubPublishClock measures what the hub's clock reading costs per
// event when a source does not stamp its events. cmd/notifyd-bench runs
// these benchmarks and prints the ratios.
package ingestbench
