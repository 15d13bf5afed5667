# The README's two commands are `make run` and `make test`.
# make run ARGS="--dbus session" passes flags to the daemon.
# make install [PREFIX=/usr/local] [DESTDIR=…] and make deb: docs/install.md.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

# scripts/version.sh: git describe, or 0.1.0-dev+g<commit>.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell ./scripts/version.sh)
endif
GOLDFLAGS = -X main.version=$(VERSION)

# Install layout. PREFIX=/usr is the Debian package's (make deb).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/notifyd
# systemd reads units from /usr/local/lib/systemd/system too.
UNITDIR ?= $(PREFIX)/lib/systemd/system
# The system bus reads activation files from /usr/local/share/dbus-1 and
# /usr/share/dbus-1, but policy only from /usr/share/dbus-1/system.d and
# /etc/dbus-1/system.d: outside /usr the policy goes to /etc.
DBUS_SERVICEDIR ?= $(DATADIR)/dbus-1/system-services
DBUS_POLICYDIR ?= $(if $(filter /usr,$(PREFIX)),$(DATADIR)/dbus-1/system.d,/etc/dbus-1/system.d)
# polkit reads actions only from /usr/share/polkit-1/actions: with another
# PREFIX the file is installed but inert until linked there (docs/policy.md).
POLKIT_ACTIONDIR ?= $(DATADIR)/polkit-1/actions
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
# Debian's zsh reads packages' completions from vendor-completions and
# /usr/local/share/zsh/site-functions.
ZSHCOMPDIR ?= $(if $(filter /usr,$(PREFIX)),$(DATADIR)/zsh/vendor-completions,$(DATADIR)/zsh/site-functions)
# fish reads vendor completions from $(DATADIR)/fish/vendor_completions.d
# under /usr and /usr/local alike.
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d

# dist/ names the binary and the docs at their /usr paths; other prefixes
# get them rewritten.
DISTSED = sed -e 's|/usr/bin/notifyd|$(BINDIR)/notifyd|g' -e 's|/usr/share/doc/notifyd|$(DOCDIR)|g'
DOCS = README.md $(wildcard docs/*.md)

.PHONY: run test build bench fuzz vm-kernel clean man completions install uninstall deb package-test FORCE

run:
	@mkdir -p bin && $(GO) build -o bin/ ./cmd/notifyd ./cmd/notifyctl && exec ./bin/notifyd $(ARGS)

test:
	./scripts/test.sh

build:
	mkdir -p bin && $(GO) build -ldflags '$(GOLDFLAGS)' -o bin/ ./cmd/...

bench:
	$(GO) run ./cmd/notifyd-bench

fuzz:
	./scripts/fuzz.sh 1000000x

# The installed binaries (go decides what is stale).
bin/notifyd bin/notifyctl: FORCE
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(GOLDFLAGS)' -o $@ ./cmd/$(notdir $@)

# Man pages from docs/*.md (scripts/man.sh, go-md2man).
man: out/man/notifyd.8 out/man/notifyctl.1
out/man/notifyd.8: docs/notifyd.md scripts/man.sh FORCE
	@mkdir -p $(@D)
	./scripts/man.sh $< notifyd 8 "kernel-event notification bus" '$(VERSION)' >$@.tmp && mv $@.tmp $@
out/man/notifyctl.1: docs/notifyctl.md scripts/man.sh FORCE
	@mkdir -p $(@D)
	./scripts/man.sh $< notifyctl 1 "command-line client of notifyd" '$(VERSION)' >$@.tmp && mv $@.tmp $@

# Shell completions, written by notifyctl itself (bash, zsh and fish).
completions: out/completions/notifyctl.bash out/completions/_notifyctl out/completions/notifyctl.fish
out/completions/notifyctl.bash: bin/notifyctl
	@mkdir -p $(@D)
	./bin/notifyctl completion bash >$@.tmp && mv $@.tmp $@
out/completions/_notifyctl: bin/notifyctl
	@mkdir -p $(@D)
	./bin/notifyctl completion zsh >$@.tmp && mv $@.tmp $@
out/completions/notifyctl.fish: bin/notifyctl
	@mkdir -p $(@D)
	./bin/notifyctl completion fish >$@.tmp && mv $@.tmp $@

install: bin/notifyd bin/notifyctl man completions
	install -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(UNITDIR)' '$(DESTDIR)$(DBUS_SERVICEDIR)' \
		'$(DESTDIR)$(DBUS_POLICYDIR)' '$(DESTDIR)$(MANDIR)/man1' '$(DESTDIR)$(MANDIR)/man8' \
		'$(DESTDIR)$(BASHCOMPDIR)' '$(DESTDIR)$(ZSHCOMPDIR)' '$(DESTDIR)$(FISHCOMPDIR)' '$(DESTDIR)$(DOCDIR)' \
		'$(DESTDIR)$(POLKIT_ACTIONDIR)'
	install -m 0755 bin/notifyd bin/notifyctl '$(DESTDIR)$(BINDIR)/'
	$(DISTSED) dist/systemd/notifyd.service >'$(DESTDIR)$(UNITDIR)/notifyd.service'
	$(DISTSED) dist/dbus-1/system-services/org.notifyd.Notifyd1.service \
		>'$(DESTDIR)$(DBUS_SERVICEDIR)/org.notifyd.Notifyd1.service'
	chmod 0644 '$(DESTDIR)$(UNITDIR)/notifyd.service' '$(DESTDIR)$(DBUS_SERVICEDIR)/org.notifyd.Notifyd1.service'
	install -m 0644 dist/dbus-1/system.d/org.notifyd.Notifyd1.conf '$(DESTDIR)$(DBUS_POLICYDIR)/'
	install -m 0644 dist/polkit-1/actions/org.notifyd.policy '$(DESTDIR)$(POLKIT_ACTIONDIR)/'
	gzip -9n <out/man/notifyd.8 >'$(DESTDIR)$(MANDIR)/man8/notifyd.8.gz'
	gzip -9n <out/man/notifyctl.1 >'$(DESTDIR)$(MANDIR)/man1/notifyctl.1.gz'
	chmod 0644 '$(DESTDIR)$(MANDIR)/man8/notifyd.8.gz' '$(DESTDIR)$(MANDIR)/man1/notifyctl.1.gz'
	install -m 0644 out/completions/notifyctl.bash '$(DESTDIR)$(BASHCOMPDIR)/notifyctl'
	install -m 0644 out/completions/_notifyctl '$(DESTDIR)$(ZSHCOMPDIR)/_notifyctl'
	install -m 0644 out/completions/notifyctl.fish '$(DESTDIR)$(FISHCOMPDIR)/notifyctl.fish'
	install -m 0644 $(DOCS) '$(DESTDIR)$(DOCDIR)/'

uninstall:
	rm -f '$(DESTDIR)$(BINDIR)/notifyd' '$(DESTDIR)$(BINDIR)/notifyctl' \
		'$(DESTDIR)$(UNITDIR)/notifyd.service' \
		'$(DESTDIR)$(DBUS_SERVICEDIR)/org.notifyd.Notifyd1.service' \
		'$(DESTDIR)$(DBUS_POLICYDIR)/org.notifyd.Notifyd1.conf' \
		'$(DESTDIR)$(POLKIT_ACTIONDIR)/org.notifyd.policy' \
		'$(DESTDIR)$(MANDIR)/man8/notifyd.8.gz' '$(DESTDIR)$(MANDIR)/man1/notifyctl.1.gz' \
		'$(DESTDIR)$(BASHCOMPDIR)/notifyctl' '$(DESTDIR)$(ZSHCOMPDIR)/_notifyctl' \
		'$(DESTDIR)$(FISHCOMPDIR)/notifyctl.fish'
	rm -rf '$(DESTDIR)$(DOCDIR)'

# The Debian package, from `make install PREFIX=/usr` into a staging
# directory: out/deb/notifyd_<version>_<arch>.deb (its path is printed last).
deb:
	./scripts/deb.sh

# Builds the package, installs it into a scratch root and checks it
# (part of make test).
package-test:
	./scripts/package-test.sh

clean:
	rm -rf bin out
