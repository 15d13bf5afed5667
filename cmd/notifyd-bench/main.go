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
	"regexp"
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
	Name    string  // what is measured
	Pkg     string  // package holding both benchmarks
	Bench   string  // benchmark (with sub-benchmark) name, without the -N suffix
	Ceiling string  // ceiling benchmark in the same package ("" = absolute figure)
	Metric  string  // metric unit compared, e.g. "records/s"
	Target  float64 // target ratio figure/ceiling (0 = none)
	Extra   []string
	Note    string
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
	Reached      *bool              `json:"reached,omitempty"`
	Extra        map[string]float64 `json:"extra,omitempty"`
	NotMeasured  string             `json:"not_measured,omitempty"`
	Note         string             `json:"note,omitempty"`
	measurements map[string][]float64
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *list {
		for _, s := range stages {
			fmt.Fprintf(stdout, "%-40s %s %s (ceiling %s)\n", s.Name, s.Pkg, s.Bench, orDash(s.Ceiling))
		}
		return nil
	}
	var sel []stage
	for _, s := range stages {
		if *only == "" || matchesAny(s.Name, *only) {
			sel = append(sel, s)
		}
	}
	// Group the benchmarks by package so each package runs once per count,
	// with a stage's figure and ceiling interleaved in the same process.
	byPkg := map[string][]string{}
	var pkgs []string
	for _, s := range sel {
		if _, ok := byPkg[s.Pkg]; !ok {
			pkgs = append(pkgs, s.Pkg)
		}
		byPkg[s.Pkg] = append(byPkg[s.Pkg], s.Bench)
		if s.Ceiling != "" {
			byPkg[s.Pkg] = append(byPkg[s.Pkg], s.Ceiling)
		}
	}
	meas := map[string]map[string][]float64{} // pkg+bench -> metric -> values
	failed := map[string]string{}
	start := time.Now()
	for _, pkg := range pkgs {
		re := benchRegexp(byPkg[pkg])
		fmt.Fprintf(stderr, "bench: %s (%s, %d runs of %s)\n", pkg, re, *count, *benchtime)
		cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", re, "-benchmem",
			"-benchtime", *benchtime, "-count", strconv.Itoa(*count), "-timeout", "30m", pkg)
		cmd.Stderr = stderr
		out, err := cmd.Output()
		parse(string(out), pkg, meas)
		if err != nil {
			failed[pkg] = err.Error()
			fmt.Fprintf(stderr, "bench: %s: %v\n%s", pkg, err, tail(string(out), 20))
		}
	}
	var results []result
	for _, s := range sel {
		results = append(results, evaluate(s, meas, failed))
	}
	printTable(stdout, results, time.Since(start))
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{
			"date": time.Now().UTC().Format(time.RFC3339), "count": *count, "benchtime": *benchtime, "results": results,
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

// benchRegexp builds a -bench pattern matching exactly the named
// benchmarks (go test splits the pattern on unbracketed slashes).
func benchRegexp(names []string) string {
	top := map[string]bool{}
	for _, n := range names {
		top[strings.SplitN(n, "/", 2)[0]] = true
	}
	var ks []string
	for k := range top {
		ks = append(ks, regexp.QuoteMeta(k))
	}
	sort.Strings(ks)
	return "^(" + strings.Join(ks, "|") + ")$"
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)

// parse collects every metric of every benchmark line in out.
func parse(out, pkg string, meas map[string]map[string][]float64) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		key := pkg + " " + m[1]
		if meas[key] == nil {
			meas[key] = map[string][]float64{}
		}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			meas[key][f[i+1]] = append(meas[key][f[i+1]], v)
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

func evaluate(s stage, meas map[string]map[string][]float64, failed map[string]string) result {
	r := result{Stage: s.Name, Bench: s.Pkg + " " + s.Bench, Metric: s.Metric, Ceiling: s.Ceiling, Target: s.Target, Note: s.Note}
	fig := meas[s.Pkg+" "+s.Bench][s.Metric]
	if len(fig) == 0 {
		r.NotMeasured = "no " + s.Metric + " figure from " + s.Bench
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
			if v := meas[s.Pkg+" "+s.Bench][e]; len(v) > 0 {
				r.Extra[e], _, _ = stats(v)
			}
		}
	}
	if s.Ceiling != "" {
		ceil := meas[s.Pkg+" "+s.Ceiling][s.Metric]
		if len(ceil) == 0 {
			r.NotMeasured = "ceiling " + s.Ceiling + " not measured"
			return r
		}
		r.CeilMedian, r.CeilMin, r.CeilMax = stats(ceil)
		if r.CeilMedian > 0 {
			r.Ratio = r.Median / r.CeilMedian
			if lowerIsBetter(s.Metric) && r.Median > 0 {
				r.Ratio = r.CeilMedian / r.Median
			}
		}
		if s.Target > 0 {
			ok := r.Ratio >= s.Target
			r.Reached = &ok
		}
	}
	return r
}

func lowerIsBetter(metric string) bool {
	return strings.HasSuffix(metric, "/op") || strings.HasPrefix(metric, "p50") || strings.HasPrefix(metric, "p99") ||
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
	}
	return fmt.Sprintf("%.3g", v)
}

func printTable(w io.Writer, rs []result, took time.Duration) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "stage\tfigure (median [min..max])\tceiling (median [min..max])\tratio\ttarget\treached\t")
	for _, r := range rs {
		if r.NotMeasured != "" && r.Runs == 0 {
			fmt.Fprintf(tw, "%s\tnot measured: %s\t\t\t\t\t\n", r.Stage, r.NotMeasured)
			continue
		}
		fig := fmt.Sprintf("%s %s [%s..%s]", human(r.Median), r.Metric, human(r.Min), human(r.Max))
		ceil, ratio, target, reached := "-", "-", "-", "-"
		if r.CeilMedian > 0 {
			ceil = fmt.Sprintf("%s [%s..%s]", human(r.CeilMedian), human(r.CeilMin), human(r.CeilMax))
			ratio = fmt.Sprintf("%.0f%%", r.Ratio*100)
		} else if r.NotMeasured != "" {
			ceil = r.NotMeasured
		}
		if r.Target > 0 {
			target = fmt.Sprintf("≥%.0f%%", r.Target*100)
		}
		if r.Reached != nil {
			reached = map[bool]string{true: "yes", false: "NO"}[*r.Reached]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Stage, fig, ceil, ratio, target, reached)
		if len(r.Extra) > 0 {
			var ks []string
			for k := range r.Extra {
				ks = append(ks, k)
			}
			sort.Strings(ks)
			var parts []string
			for _, k := range ks {
				parts = append(parts, fmt.Sprintf("%s %s", human(r.Extra[k]), k))
			}
			fmt.Fprintf(tw, "\t  %s\t\t\t\t\t\n", strings.Join(parts, ", "))
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "(%s; ratios compare figures taken in the same run)\n", took.Round(time.Second))
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n") + "\n"
}
