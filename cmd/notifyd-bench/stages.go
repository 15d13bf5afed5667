package main

const mod = "github.com/notifyd/notifyd/"

// stages is the measured path, in the order events travel.
var stages = []stage{
	{Name: "queue read + decode", Pkg: mod + "internal/ingestbench", Bench: "BenchmarkQueueDecode", Ceiling: "BenchmarkPipeCeiling", Metric: "records/s"},
	{Name: "ingest (read+decode+stamp+publish)", Pkg: mod + "internal/ingestbench", Bench: "BenchmarkIngest", Ceiling: "BenchmarkPipeCeiling", Metric: "records/s", Target: 0.5, Extra: []string{"allocs/op"}},
}
