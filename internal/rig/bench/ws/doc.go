// Package wsbench holds the WebSocket ceilings and the WebSocket targets
// that web's own BenchmarkDelivery (throughput beside the ceilings) does
// not cover.
//
// Ceiling is a bare gorilla broadcast server in two forms: the fair
// ceiling (gorilla's chat example: queued messages coalesced into one
// frame, a write-buffer pool), which the targets are stated against, and
// the naive one (one frame per message), the strawman of earlier runs.
//
// The benchmarks (in its tests): the publish→receive latency of notifyd's
// server at 10 000 events/s to 100 clients beside the fair ceiling's, with
// the latency at each stage of notifyd's path (BenchmarkFixedRate; p99 ≤
// 5 ms), again with the hub's history full and with a history of one
// event, to tell what the history costs the tail; its resident memory per idle client with the clients in another
// process, in process beside a bare server (BenchmarkIdleRSS) and on the
// real daemon over its unix socket and TCP (BenchmarkDaemonIdleRSS; ≤ 20
// KiB). cmd/notifyd-bench runs them; docs/performance.md explains the
// figures.
package wsbench
