// Package wsbench measures two WebSocket targets of issue 10 that web's
// own BenchmarkDelivery (throughput beside a bare gorilla server) does not
// cover: the publish→receive latency of notifyd's server at 10 000
// events/s to 100 clients (p99 ≤ 5 ms), and its resident memory per idle
// client with the clients in another process, so that only the server
// side counts (≤ 20 KiB), beside a bare gorilla server.
// cmd/notifyd-bench runs it; docs/performance.md explains the figures.
package wsbench
