// Package ingestbench measures notifyd's ingest path — reading records
// from a pipe, decoding them, turning them into events and publishing them
// to the hub — beside the bare read loop that is its ceiling, in the same
// run. The host kernel has no notification pipes, so the records travel
// through an ordinary pipe: BenchmarkIngest hands it to the key source's
// own ingest (keys.Ingest: batch slab, describe cache of a real key,
// interned state keys, mapping by eventrec) and prints its rate as a
// percentage of the ceiling and the heap allocations per record; the
// source hands the hub one PublishBatch per read, as in the daemon.
// BenchmarkIngestUnbatched is the same path with one Publish per record
// and BenchmarkIngestMetrics the same behind metrics.Events.Sink (the
// daemon's wiring before the hub counted for the metrics), for
// comparison in one run. BenchmarkHubPublishClock measures what the hub's
// clock reading costs per event when a source does not stamp its events,
// and PublishBatch's cost per event for a batch of 256. cmd/notifyd-bench runs
// these benchmarks and prints the ratios.
package ingestbench
