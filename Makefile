# The README's two commands are `make run` and `make test`.
# make run ARGS="--dbus session" passes flags to the daemon.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

.PHONY: run test build bench fuzz vm-kernel clean

run:
	@mkdir -p bin && $(GO) build -o bin/notifyd ./cmd/notifyd && exec ./bin/notifyd $(ARGS)

test:
	./scripts/test.sh

build:
	mkdir -p bin && $(GO) build -o bin/ ./cmd/...

bench:
	$(GO) run ./cmd/notifyd-bench

fuzz:
	./scripts/fuzz.sh 1000000x

clean:
	rm -rf bin
