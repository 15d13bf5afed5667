package vm

import (
	"strings"
	"testing"
)

func TestParseTestOutput(t *testing.T) {
	out := strings.Split(`=== RUN   TestA
    a_test.go:10: hello
--- PASS: TestA (0.00s)
=== RUN   TestB
=== RUN   TestB/sub
    b_test.go:5: inner failure
    --- FAIL: TestB/sub (0.01s)
--- FAIL: TestB (0.01s)
=== RUN   TestC
    c_test.go:3: skipped: no widget
--- SKIP: TestC (0.00s)
=== RUN   TestD
panic: boom
goroutine 1 [running]:
FAIL	example.com/p	0.5s`, "\n")
	tests, rest := ParseTestOutput(out)
	want := []struct {
		name, outcome string
		lines         int
	}{
		{"TestA", "PASS", 3},
		{"TestB", "FAIL", 5},
		{"TestC", "SKIP", 3},
		{"TestD", "", 4},
	}
	if len(tests) != len(want) {
		t.Fatalf("got %d tests, want %d: %+v", len(tests), len(want), tests)
	}
	for i, w := range want {
		tc := tests[i]
		if tc.Name != w.name || tc.Outcome != w.outcome || len(tc.Output) != w.lines {
			t.Errorf("test %d = %s %q with %d lines, want %s %q with %d:\n%s", i, tc.Name, tc.Outcome, len(tc.Output), w.name, w.outcome, w.lines, strings.Join(tc.Output, "\n"))
		}
	}
	if len(rest) != 0 {
		t.Errorf("rest = %q, want nothing (the crash belongs to TestD)", rest)
	}

	_, rest = ParseTestOutput([]string{"=== RUN   TestA", "--- PASS: TestA (0.00s)", "PASS"})
	if len(rest) != 1 || rest[0] != "PASS" {
		t.Errorf("rest = %q, want the PASS trailer", rest)
	}
}

func FuzzParseTestOutput(f *testing.F) {
	f.Add("=== RUN   TestA\n--- PASS: TestA (0.00s)\nPASS")
	f.Add("=== RUN   TestB/x\n    --- FAIL: TestB/x (1s)\n--- FAIL: TestB (1s)")
	f.Add("=== CONT  TestC\npanic: x")
	f.Fuzz(func(t *testing.T, s string) {
		lines := strings.Split(s, "\n")
		tests, rest := ParseTestOutput(lines)
		n := len(rest)
		seen := map[string]bool{}
		for _, tc := range tests {
			if seen[tc.Name] || strings.Contains(tc.Name, "/") {
				t.Fatalf("bad or duplicate top-level name %q", tc.Name)
			}
			seen[tc.Name] = true
			n += len(tc.Output)
		}
		if n != len(lines) {
			t.Fatalf("%d lines in, %d attributed", len(lines), n)
		}
	})
}
