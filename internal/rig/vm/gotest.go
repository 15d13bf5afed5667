package vm

import (
	"regexp"
	"strings"
)

// TestCase is one top-level test from a test binary's -test.v output.
type TestCase struct {
	Name string
	// Outcome is "PASS", "FAIL", "SKIP", or "" when the test started but
	// never finished (the binary crashed, hung or was killed).
	Outcome string
	// Output holds the lines printed while the test (or one of its
	// subtests) ran, including its result lines.
	Output []string
}

var (
	runRe    = regexp.MustCompile(`^=== (RUN|CONT|NAME|PAUSE)\s+(\S+)`)
	resultRe = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(`)
)

// ParseTestOutput splits a test binary's -test.v output into its
// top-level tests, in the order they started. Output that belongs to no
// test (package-level panics, "FAIL" trailers) is returned as rest.
func ParseTestOutput(lines []string) (tests []*TestCase, rest []string) {
	byName := map[string]*TestCase{}
	var cur *TestCase
	top := func(name string) string {
		n, _, _ := strings.Cut(name, "/")
		return n
	}
	get := func(name string) *TestCase {
		tc := byName[name]
		if tc == nil {
			tc = &TestCase{Name: name}
			byName[name] = tc
			tests = append(tests, tc)
		}
		return tc
	}
	for _, l := range lines {
		if m := runRe.FindStringSubmatch(l); m != nil {
			cur = get(top(m[2]))
			cur.Output = append(cur.Output, l)
			continue
		}
		if m := resultRe.FindStringSubmatch(l); m != nil {
			tc := get(top(m[2]))
			tc.Output = append(tc.Output, l)
			if !strings.Contains(m[2], "/") {
				tc.Outcome = m[1]
				if cur == tc {
					cur = nil
				}
			}
			continue
		}
		if cur != nil {
			cur.Output = append(cur.Output, l)
		} else {
			rest = append(rest, l)
		}
	}
	return tests, rest
}
