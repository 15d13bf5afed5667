#!/usr/bin/env bash
# Runs every Fuzz target in the module briefly: $1 is go test's -fuzztime,
# default 100000x (executions). A count, not a duration: with a duration
# Go's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" and no crasher when the time runs out (golang/go#75804, not
# fixed in Go 1.26); a count never takes that path.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-100000x}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "fuzz $pkg $f ($t)"
		go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t" "$pkg" >/tmp/fuzz.log 2>&1 || { cat /tmp/fuzz.log; exit 1; }
	done
done
