package main

import (
	"reflect"
	"strings"
	"testing"
)

// Output of go test -bench where a benchmark wrote to stderr while it ran
// (web's BenchmarkDelivery, dbusapi's daemon logs): the values land on a
// later line than the name.
const interleaved = `goos: linux
pkg: github.com/notifyd/notifyd/web
BenchmarkDelivery/N=1-2         	N=1: notifyd 73831 deliveries/s (73831 events/s), ratio 0.99
     200	     27014 ns/op	     74296 bare-deliveries/s	     73831 deliveries/s
BenchmarkDelivery/N=100-2       	     100	     5 ns/op	     1.5e+06 deliveries/s
BenchmarkIntegrationUnicast/subs=1-2         	dbus-daemon[18163]: [system] Failed to set fd limit
    2000	        10.00 bus-µs/signal	     33288 signals/s
--- BENCH: BenchmarkIntegrationUnicast/subs=1-2
    bench_test.go:272: subs=1 events=2000: service 33288 signals/s
BenchmarkPipeCeiling-2   	 2000000	        27.99 ns/op	  35741581 records/s	       0 B/op	       0 allocs/op
PASS
`

func TestParse(t *testing.T) {
	meas := map[string]map[string][]float64{}
	parse(interleaved, "p", meas, nil)
	parse(interleaved, "p", meas, nil) // a second run appends
	want := map[string]map[string][]float64{
		"p BenchmarkDelivery/N=1":              {"ns/op": {27014, 27014}, "bare-deliveries/s": {74296, 74296}, "deliveries/s": {73831, 73831}},
		"p BenchmarkDelivery/N=100":            {"ns/op": {5, 5}, "deliveries/s": {1.5e6, 1.5e6}},
		"p BenchmarkIntegrationUnicast/subs=1": {"bus-µs/signal": {10, 10}, "signals/s": {33288, 33288}},
		"p BenchmarkPipeCeiling":               {"ns/op": {27.99, 27.99}, "records/s": {35741581, 35741581}, "B/op": {0, 0}, "allocs/op": {0, 0}},
	}
	if !reflect.DeepEqual(meas, want) {
		t.Fatalf("parse:\n got %v\nwant %v", meas, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(interleaved)
	f.Add("BenchmarkX-2 \t 1 \t 2 a/s\n")
	f.Fuzz(func(t *testing.T, out string) {
		meas := map[string]map[string][]float64{}
		parse(out, "p", meas, map[string]string{})
		for k, m := range meas {
			if !strings.HasPrefix(k, "p Benchmark") {
				t.Fatalf("key %q", k)
			}
			for unit, v := range m {
				if len(v) == 0 || unit == "" {
					t.Fatalf("%s: empty %q", k, unit)
				}
			}
		}
	})
}

func TestBenchRegexp(t *testing.T) {
	for _, c := range []struct {
		names []string
		want  string
	}{
		{[]string{"BenchmarkA", "BenchmarkB"}, "^(BenchmarkA|BenchmarkB)$"},
		{[]string{"BenchmarkA/n=1", "BenchmarkA/n=1000"}, "^(BenchmarkA)$/^(n=1|n=1000)$"},
		{[]string{"BenchmarkA/n=1", "BenchmarkB"}, "^(BenchmarkA|BenchmarkB)$"},
	} {
		if got := benchRegexp(c.names); got != c.want {
			t.Errorf("benchRegexp(%q) = %q, want %q", c.names, got, c.want)
		}
	}
}

func TestEvaluate(t *testing.T) {
	meas := map[string]map[string][]float64{
		"p BenchmarkHub": {"hub-ns/event": {100, 300, 200}, "chan-ns/event": {50, 50, 60}, "allocs/event": {0.5, 0.5, 0.5}},
	}
	s := stage{Name: "hub", Pkg: "p", Bench: "BenchmarkHub", Metric: "hub-ns/event", CeilMetric: "chan-ns/event", Lower: true, Target: 0.5,
		Checks: []check{{Metric: "allocs/event", Per: 500, As: "allocs/delivery", Limit: 0.01}}}
	r := evaluate(s, meas, nil, nil)
	if r.Median != 200 || r.Min != 100 || r.Max != 300 || r.CeilMedian != 50 {
		t.Fatalf("medians: %+v", r)
	}
	if r.Ratio != 0.25 || r.Reached == nil || *r.Reached {
		t.Fatalf("ratio %v reached %v, want 0.25 and not reached", r.Ratio, r.Reached)
	}
	if len(r.Checks) != 1 || r.Checks[0].Value != 0.001 || !r.Checks[0].Reached {
		t.Fatalf("checks: %+v", r.Checks)
	}
	s.Target = 0.2
	if r := evaluate(s, meas, nil, nil); !*r.Reached {
		t.Fatalf("target 20%% at ratio 25%% not reached")
	}
	if r := evaluate(stage{Name: "vm", NotMeasured: "no VM"}, meas, nil, nil); r.NotMeasured != "no VM" || r.Reached != nil {
		t.Fatalf("not measured stage: %+v", r)
	}
	if r := evaluate(stage{Name: "x", Pkg: "p", Bench: "BenchmarkNone", Metric: "x/s"}, meas, nil, map[string]string{"p": "exit status 1"}); !strings.Contains(r.NotMeasured, "exit status 1") {
		t.Fatalf("failed package: %+v", r)
	}
}

func TestParseSkip(t *testing.T) {
	const out = `BenchmarkVMKeyStorm
    vm_test.go:41: skipped: no VM kernel: exit status 3 (fix: ./scripts/vm-kernel.sh)
--- SKIP: BenchmarkVMKeyStorm
BenchmarkOther
--- SKIP: BenchmarkOther
    x_test.go:1: after
BenchmarkBurst
BenchmarkBurst/rcvbuf=8MiB
BenchmarkBurst/rcvbuf=8MiB-2         	       2	 5 events/s
PASS
`
	meas, skips := map[string]map[string][]float64{}, map[string]string{}
	parse(out, "p", meas, skips)
	if got := skips["p BenchmarkVMKeyStorm"]; got != "skipped: no VM kernel: exit status 3 (fix: ./scripts/vm-kernel.sh)" {
		t.Fatalf("skip reason %q", got)
	}
	if got := meas["p BenchmarkBurst/rcvbuf=8MiB"]["events/s"]; len(got) != 1 || got[0] != 5 {
		t.Fatalf("events/s %v", got)
	}
	if got := skips["p BenchmarkOther"]; got != "after" {
		t.Fatalf("skip reason after the SKIP line: %q", got)
	}
	r := evaluate(stage{Name: "vm", Pkg: "p", Bench: "BenchmarkVMKeyStorm/sub", Metric: "events/s"}, meas, skips, nil)
	if !strings.Contains(r.NotMeasured, "no VM kernel") {
		t.Fatalf("not measured: %q", r.NotMeasured)
	}
}
