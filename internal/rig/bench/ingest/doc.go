// Package ingestbench measures notifyd's ingest path — reading records
// from a pipe, decoding them, handing them to the hub and one subscriber —
// beside the bare read loop that is its ceiling, in the same run. The
// host kernel has no notification pipes, so the records travel through an
// ordinary pipe, written by another process (this test binary run again:
// like the kernel, the writer then needs none of this process's Ps; the
// -ingest.feed=goroutine flag writes from a goroutine instead).
//
// BenchmarkIngest hands the pipe to the key source's own ingest
// (keys.Ingest: describe cache of a real key, runs of records with the
// key's template to fanout.Hub.PublishRecords, events for the rest) over
// a storm on one key, with one subscriber that drains into memory it owns
// (fanout.Subscription.DrainBatch). It prints the rate as a percentage of
// the ceiling, the heap allocations per record of the whole pipeline, how
// long the subscriber took to be handed everything, and how much of the
// stream it was handed (the rest reached it as loss events).
// BenchmarkIngestKept is the same with a subscriber that drains with
// Drain (events it may keep, built on the heap); BenchmarkIngestMixed
// feeds records none of which is the same bytes as the one before (no
// runs); BenchmarkIngestHub has no subscriber; BenchmarkIngestSource no
// hub (a sink that only counts, so the source maps every record to an
// event). BenchmarkIngestUnbatched and BenchmarkIngestMetrics are the
// event path with one Publish per record and behind metrics.Events.Sink,
// for comparison in one run. BenchmarkHubPublishClock measures what the
// hub's clock reading costs per event when a source does not stamp its
// events. cmd/notifyd-bench runs these benchmarks and prints the ratios.
package ingestbench
