#!/usr/bin/env bash
# The whole test suite: installs its dependencies, checks formatting, vet
# and go.mod, builds and checks the Debian package, runs every test under
# the race detector (host kernel, real dbus-daemon, real Chromium, and the
# qemu VM with watch_queue on), then a short fuzz pass over every decoder
# and parser. See docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
start=$(date +%s)

./scripts/deps.sh

echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change:"; echo "$bad"; exit 1; fi

echo "== go vet"
go vet ./...

echo "== go mod tidy"
if ! tidy=$(go mod tidy -diff 2>&1); then
	if grep -q '^diff ' <<<"$tidy"; then
		echo "go mod tidy would change go.mod/go.sum (run \`go mod tidy\` and commit the result):"
	else
		echo "go mod tidy -diff failed:"
	fi
	echo "$tidy"
	exit 1
fi

# The Debian package built from make install's files, installed into a
# scratch root and checked there (scripts/package-test.sh, docs/install.md).
echo "== package"
./scripts/package-test.sh

# VM tier: build (or reuse) the watch_queue kernel. The VM tests find it
# through NOTIFYD_VM_KERNEL.
if [ -x scripts/vm-kernel.sh ]; then
	echo "== vm kernel"
	NOTIFYD_VM_KERNEL=$(./scripts/vm-kernel.sh)
	export NOTIFYD_VM_KERNEL
fi

echo "== go test -race"
# gotestsum runs go test and closes with the counts of passed, failed and
# skipped tests, and lists every skip with its reason.
GOFLAGS= go install gotest.tools/gotestsum@v1.13.0
gotestsum=$(go env GOPATH)/bin/gotestsum
"$gotestsum" --format pkgname-and-test-fails --format-hide-empty-pkg \
	--jsonfile /tmp/notifyd-test.json -- -race -count=1 -timeout 45m ./...

# The hub soak at full size (>= 1M events): under -race above it runs
# scaled down to keep the race detector's cost near a minute.
echo "== fanout soak (1M events, no race detector)"
go test -count=1 -run TestSoak ./fanout/

echo "== fuzz (short)"
./scripts/fuzz.sh "${FUZZTIME:-100000x}"

count() { grep -h "\"Action\":\"$1\"" /tmp/notifyd-test.json | grep -c '"Test":' || true; }
echo "== done in $(( $(date +%s) - start ))s"
echo "tests: $(count pass) passed, $(count fail) failed, $(count skip) skipped"
