// Package ingestbench measures notifyd's ingest path — reading records
// from a pipe, decoding them, turning them into events and publishing them
// to the hub — beside the bare read loop that is its ceiling, in the same
// run. The host kernel has no notification pipes, so the records travel
// through an ordinary pipe: the read syscall and the decoder are the same
// ones the key source uses on a notification pipe.
//
// BenchmarkIngestSlab is not notifyd's path: it prototypes the allocation
// scheme docs/performance.md suggests (one copy and one slab of events per
// read instead of several allocations per record) to show what it gains.
// cmd/notifyd-bench runs these benchmarks and prints the ratios.
package ingestbench
