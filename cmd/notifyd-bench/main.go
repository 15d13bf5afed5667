// Command notifyd-bench measures every stage of notifyd's event path beside
// its ceiling, measured in the same run, and prints one table (and writes a
// JSON file) with medians, spread and ratios. Benchmarks never fail: they
// report. See docs/performance.md.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "notifyd-bench: %v\n", err)
		}
		os.Exit(2)
	}
}

// A stage pairs a benchmark with the ceiling it is compared to.
type stage struct {
	Name  string // what is measured
	Pkg   string // package holding both benchmarks
	Bench string // benchmark (with sub-benchmark) name, without the -N suffix
	// Ceiling is the ceiling benchmark in the same package. "" with
	// CeilMetric set: the ceiling is another metric of Bench itself (a
	// benchmark that runs figure and ceiling side by side). Both empty:
	// an absolute figure.
	Ceiling    string
	Metric     string // metric unit compared, e.g. "records/s"
	CeilMetric string // the ceiling's metric unit ("" = Metric)
	// Lower says a lower figure is better (ns/event, latency): the ratio
	// is then ceiling/figure, so that above 1 is always better.
	Lower  bool
	Target float64 // target ratio figure/ceiling (0 = none)
	// Checks are absolute targets on metrics of Bench.
	Checks []check
	Extra  []string // further metrics of Bench shown under the row
	// Benchtime overrides -benchtime for this stage's package run (for
	// benchmarks whose one op is a fixed-size burst or a paced run).
	Benchtime string
	// NotMeasured, when set, is why this stage is not measured at all;
	// it is listed in the table with the reason and nothing is run.
	NotMeasured string
	Note        string
}

// A check is an absolute target on one metric: its median (divided by
// Per when set, and then named As) must be at most Limit, or at least
// Limit when AtLeast is set.
type check struct {
	Metric  string
	Limit   float64
	AtLeast bool
	Per     float64 // divide the metric by this (e.g. deliveries per event)
	As      string  // the divided metric's name
}

func (c check) String() string {
	op := "≤"
	if c.AtLeast {
		op = "≥"
	}
	return fmt.Sprintf("%s %s %s", orDefault(c.As, c.Metric), op, human(c.Limit))
}

func (c check) value(v float64) float64 {
	if c.Per > 0 {
		return v / c.Per
	}
	return v
}

func (c check) ok(v float64) bool {
	if c.AtLeast {
		return v >= c.Limit
	}
	return v <= c.Limit
}

// result is one stage's outcome.
type result struct {
	Stage        string             `json:"stage"`
	Bench        string             `json:"bench"`
	Metric       string             `json:"metric"`
	Median       float64            `json:"median"`
	Min          float64            `json:"min"`
	Max          float64            `json:"max"`
	Runs         int                `json:"runs"`
	Ceiling      string             `json:"ceiling,omitempty"`
	CeilMedian   float64            `json:"ceiling_median,omitempty"`
	CeilMin      float64            `json:"ceiling_min,omitempty"`
	CeilMax      float64            `json:"ceiling_max,omitempty"`
	Ratio        float64            `json:"ratio,omitempty"`
	Target       float64            `json:"target,omitempty"`
	Checks       []checkResult      `json:"checks,omitempty"`
	Reached      *bool              `json:"reached,omitempty"`
	Extra        map[string]float64 `json:"extra,omitempty"`
	NotMeasured  string             `json:"not_measured,omitempty"`
	Note         string             `json:"note,omitempty"`
	measurements map[string][]float64
}

// checkResult is one absolute target's outcome.
type checkResult struct {
	Target  string  `json:"target"`
	Value   float64 `json:"value"`
	Reached bool    `json:"reached"`
	Missing bool    `json:"missing,omitempty"`
}

const usage = `notifyd-bench - measure notifyd's event path against its ceilings

Usage:
  notifyd-bench [flags]

Runs the benchmarks of each stage and of its ceiling in the same run
(several times: figures are medians with their min..max spread), then
prints a table with the ratio figure/ceiling and whether the target ratio
was reached. Only ratios are comparable across runs: the machines are noisy.

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("notifyd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	count := fs.Int("count", 5, "runs of each benchmark")
	benchtime := fs.String("benchtime", "1s", "go test -benchtime for each run")
	only := fs.String("stages", "", "comma-separated stage name substrings to run (default all)")
	jsonOut := fs.String("json", "bench-results.json", "write the results as JSON to this `file` (\"\" for none)")
	list := fs.Bool("list", false, "list the stages and exit")
	profDir := fs.String("cpuprofile", "", "write a CPU profile of each package run into this `dir` (with the test binary, for go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *list {
		for _, s := range stages {
			ceil := s.Ceiling
			if ceil == "" && s.CeilMetric != "" {
				ceil = s.Bench + " " + s.CeilMetric
			}
			fmt.Fprintf(stdout, "%-44s %s %s (ceiling %s)\n", s.Name, strings.TrimPrefix(s.Pkg, mod), s.Bench, orDash(ceil))
		}
		return nil
	}
	if *profDir != "" {
		if err := os.MkdirAll(*profDir, 0o755); err != nil {
			return fmt.Errorf("create profile dir: %w", err)
		}
	}
	var sel []stage
	for _, s := range stages {
		if *only == "" || matchesAny(s.Name, *only) {
			sel = append(sel, s)
		}
	}
	// Group the benchmarks by package (and benchtime) so each package
	// runs once per count, with a stage's figure and ceiling in the same
	// process.
	type runKey struct{ pkg, benchtime string }
	byRun := map[runKey][]string{}
	var runs []runKey
	for _, s := range sel {
		if s.NotMeasured != "" {
			continue
		}
		k := runKey{s.Pkg, *benchtime}
		if s.Benchtime != "" {
			k.benchtime = s.Benchtime
		}
		if _, ok := byRun[k]; !ok {
			runs = append(runs, k)
		}
		byRun[k] = append(byRun[k], s.Bench)
		if s.Ceiling != "" {
			byRun[k] = append(byRun[k], s.Ceiling)
		}
	}
	loadBefore := loadAvg()
	meas := map[string]map[string][]float64{} // pkg+bench -> metric -> values
	skips := map[string]string{}              // pkg+bench -> why it skipped
	failed := map[string]string{}
	start := time.Now()
	for _, k := range runs {
		re := benchRegexp(byRun[k])
		fmt.Fprintf(stderr, "bench: %s (%s, %d runs of %s)\n", k.pkg, re, *count, k.benchtime)
		args := []string{"test", "-v", "-run", "^$", "-bench", re, "-benchmem",
			"-benchtime", k.benchtime, "-count", strconv.Itoa(*count), "-timeout", "30m"}
		if *profDir != "" {
			base := filepath.Join(*profDir, strings.ReplaceAll(strings.TrimPrefix(k.pkg, mod), "/", "_"))
			args = append(args, "-cpuprofile", base+".prof", "-o", base+".test")
		}
		cmd := exec.CommandContext(ctx, "go", append(args, k.pkg)...)
		cmd.Stderr = stderr
		out, err := cmd.Output()
		parse(string(out), k.pkg, meas, skips)
		if err != nil {
			failed[k.pkg] = err.Error()
			fmt.Fprintf(stderr, "bench: %s: %v\n%s", k.pkg, err, tail(string(out), 20))
		}
	}
	var results []result
	for _, s := range sel {
		results = append(results, evaluate(s, meas, skips, failed))
	}
	loadAfter := loadAvg()
	printTable(stdout, results, time.Since(start))
	fmt.Fprintf(stdout, "load average (1, 5, 15 min) before: %s, after: %s on %d CPUs (figures from a loaded machine are noisy: compare ratios)\n",
		orDash(loadBefore), orDash(loadAfter), runtime.NumCPU())
	if *profDir != "" {
		fmt.Fprintf(stdout, "\nCPU profiles in %s: go tool pprof -top DIR/PKG.test DIR/PKG.prof\n", *profDir)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{
			"date": time.Now().UTC().Format(time.RFC3339), "count": *count, "benchtime": *benchtime, "results": results,
			"loadavg_before": loadBefore, "loadavg_after": loadAfter, "cpus": runtime.NumCPU(),
		}, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write results: %w", err)
		}
		fmt.Fprintf(stdout, "\nresults written to %s\n", *jsonOut)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func matchesAny(name, csv string) bool {
	for _, p := range strings.Split(csv, ",") {
		if p = strings.TrimSpace(p); p != "" && strings.Contains(strings.ToLower(name), strings.ToLower(p)) {
			return true
		}
	}
	return false
}

// benchRegexp builds a -bench pattern matching the named benchmarks (go
// test splits the pattern on unbracketed slashes). When every name has a
// sub-benchmark, the second level is restricted too (to the union of the
// sub-benchmark names: a superset when several top-level names differ).
func benchRegexp(names []string) string {
	top, sub := map[string]bool{}, map[string]bool{}
	allSub := true
	for _, n := range names {
		t, s, ok := strings.Cut(n, "/")
		top[t] = true
		if ok {
			sub[s] = true
		} else {
			allSub = false
		}
	}
	re := "^(" + strings.Join(quoted(top), "|") + ")$"
	if allSub {
		re += "/^(" + strings.Join(quoted(sub), "|") + ")$"
	}
	return re
}

func quoted(set map[string]bool) []string {
	var ks []string
	for k := range set {
		ks = append(ks, regexp.QuoteMeta(k))
	}
	sort.Strings(ks)
	return ks
}

var (
	skipLine  = regexp.MustCompile(`^--- SKIP: (Benchmark\S+?)(?:-\d+)?(?:\s|$)`)
	logLine   = regexp.MustCompile(`^\S+\.go:\d+: (.*)$`)
	benchName = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?(?:\s+(.*))?$`)
	benchVals = regexp.MustCompile(`^(\d+)\s+(\S+\s+\S+.*)$`)
)

// parse collects every metric of every benchmark result in out. A result
// is "BenchmarkName-P <tab> N <tab> value unit ...", but whatever the
// benchmark prints to stderr while it runs lands after the name, pushing
// "N value unit ..." onto a later line: that line is then credited to the
// last name seen. A skipped benchmark's reason (go test -v prints it after
// "--- SKIP: Name") goes into skips.
func parse(out, pkg string, meas map[string]map[string][]float64, skips map[string]string) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	pending, skipped, lastLog := "", "", ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := skipLine.FindStringSubmatch(line); m != nil {
			skipped, pending = pkg+" "+m[1], ""
			if skips != nil {
				skips[skipped] = orDefault(lastLog, "skipped")
			}
			continue
		}
		if m := logLine.FindStringSubmatch(line); m != nil {
			if skipped != "" && skips != nil {
				skips[skipped] = m[1]
			}
			lastLog = m[1]
			continue
		}
		skipped = ""
		name, rest := "", line
		if m := benchName.FindStringSubmatch(line); m != nil {
			name, rest = m[1], m[2]
			pending, lastLog = name, ""
		} else if pending != "" {
			name = pending
		} else {
			continue
		}
		v := benchVals.FindStringSubmatch(rest)
		if v == nil {
			continue
		}
		pending = ""
		key := pkg + " " + name
		if meas[key] == nil {
			meas[key] = map[string][]float64{}
		}
		f := strings.Fields(v[2])
		for i := 0; i+1 < len(f); i += 2 {
			x, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			meas[key][f[i+1]] = append(meas[key][f[i+1]], x)
		}
	}
}

func stats(v []float64) (med, lo, hi float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

func evaluate(s stage, meas map[string]map[string][]float64, skips, failed map[string]string) result {
	r := result{Stage: s.Name, Bench: s.Pkg + " " + s.Bench, Metric: s.Metric, Ceiling: s.Ceiling, Target: s.Target, Note: s.Note}
	if s.NotMeasured != "" {
		r.NotMeasured = s.NotMeasured
		return r
	}
	m := meas[s.Pkg+" "+s.Bench]
	fig := m[s.Metric]
	if len(fig) == 0 {
		r.NotMeasured = "no " + s.Metric + " figure from " + s.Bench
		for name := s.Bench; name != ""; name = name[:max(0, strings.LastIndexByte(name, '/'))] {
			if why, ok := skips[s.Pkg+" "+name]; ok {
				r.NotMeasured = s.Bench + " skipped: " + why
				break
			}
		}
		if f, ok := failed[s.Pkg]; ok {
			r.NotMeasured += " (" + f + ")"
		}
		return r
	}
	r.Median, r.Min, r.Max = stats(fig)
	r.Runs = len(fig)
	if len(s.Extra) > 0 {
		r.Extra = map[string]float64{}
		for _, e := range s.Extra {
			if v := m[e]; len(v) > 0 {
				r.Extra[e], _, _ = stats(v)
			}
		}
	}
	reached := true
	for _, c := range s.Checks {
		cr := checkResult{Target: c.String()}
		if v := m[c.Metric]; len(v) > 0 {
			cr.Value, _, _ = stats(v)
			cr.Value = c.value(cr.Value)
			cr.Reached = c.ok(cr.Value)
		} else {
			cr.Missing = true
		}
		reached = reached && cr.Reached
		r.Checks = append(r.Checks, cr)
	}
	var ceil []float64
	switch {
	case s.Ceiling != "":
		ceil = meas[s.Pkg+" "+s.Ceiling][orDefault(s.CeilMetric, s.Metric)]
		if len(ceil) == 0 {
			r.NotMeasured = "ceiling " + s.Ceiling + " not measured"
		}
	case s.CeilMetric != "":
		r.Ceiling = s.Bench + " " + s.CeilMetric
		ceil = m[s.CeilMetric]
		if len(ceil) == 0 {
			r.NotMeasured = "no " + s.CeilMetric + " ceiling from " + s.Bench
		}
	}
	if len(ceil) > 0 {
		r.CeilMedian, r.CeilMin, r.CeilMax = stats(ceil)
		if r.CeilMedian > 0 {
			r.Ratio = r.Median / r.CeilMedian
			if (s.Lower || lowerIsBetter(s.Metric)) && r.Median > 0 {
				r.Ratio = r.CeilMedian / r.Median
			}
		}
		if s.Target > 0 {
			reached = reached && r.Ratio >= s.Target
		}
	} else if s.Target > 0 {
		reached = false
	}
	if s.Target > 0 || len(s.Checks) > 0 {
		r.Reached = &reached
	}
	return r
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func lowerIsBetter(metric string) bool {
	return strings.HasSuffix(metric, "/op") || strings.HasPrefix(metric, "ns/") || strings.Contains(metric, "-ns/") ||
		strings.HasPrefix(metric, "p50") || strings.HasPrefix(metric, "p99") ||
		strings.Contains(metric, "latency") || strings.Contains(metric, "B/conn")
}

func human(v float64) string {
	switch a := v; {
	case a >= 1e9:
		return fmt.Sprintf("%.2fG", v/1e9)
	case a >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a != 0 && a < 0.01:
		return fmt.Sprintf("%.1e", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func printTable(w io.Writer, rs []result, took time.Duration) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "stage\tfigure (median [min..max])\tceiling (median [min..max])\tratio\ttarget (value)\treached\tnote")
	for _, r := range rs {
		if r.NotMeasured != "" && r.Runs == 0 {
			fmt.Fprintf(tw, "%s\tnot measured\t-\t-\t-\t-\t%s\n", r.Stage, r.NotMeasured)
			continue
		}
		fig := fmt.Sprintf("%s %s [%s..%s]", human(r.Median), r.Metric, human(r.Min), human(r.Max))
		ceil, ratio, reached := "-", "-", "-"
		var targets []string
		if r.CeilMedian > 0 {
			ceil = fmt.Sprintf("%s [%s..%s]", human(r.CeilMedian), human(r.CeilMin), human(r.CeilMax))
			ratio = fmt.Sprintf("%.0f%%", r.Ratio*100)
		}
		if r.Target > 0 {
			targets = append(targets, fmt.Sprintf("≥%.0f%%", r.Target*100))
		}
		for _, c := range r.Checks {
			v := human(c.Value)
			if c.Missing {
				v = "missing"
			}
			targets = append(targets, fmt.Sprintf("%s (%s)", c.Target, v))
		}
		if r.Reached != nil {
			reached = map[bool]string{true: "yes", false: "NO"}[*r.Reached]
		}
		note := r.Note
		if r.NotMeasured != "" {
			note = strings.TrimPrefix(note+"; "+r.NotMeasured, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Stage, fig, ceil, ratio, orDash(strings.Join(targets, ", ")), reached, note)
	}
	tw.Flush()
	first := true
	for _, r := range rs {
		if len(r.Extra) == 0 {
			continue
		}
		if first {
			fmt.Fprintf(w, "\nmore figures (medians):\n")
			first = false
		}
		var ks []string
		for k := range r.Extra {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		var parts []string
		for _, k := range ks {
			parts = append(parts, fmt.Sprintf("%s %s", human(r.Extra[k]), k))
		}
		fmt.Fprintf(w, "  %s: %s\n", r.Stage, strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "(%s; ratios compare figures taken in the same run; above 100%% is better than the ceiling)\n", took.Round(time.Second))
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n") + "\n"
}

// loadAvg is the 1, 5 and 15 minute load averages ("" when unknown).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
