#!/usr/bin/env bash
# Installs what the test suite needs on a bare Debian machine, idempotently.
# Every package a test uses is named here, so that a fresh clone and
# `make test` are enough. Run as root (or with sudo).
set -euo pipefail

packages=(
	# VM tier: qemu under TCG and the kernel we build with watch_queue on
	qemu-system-x86 linux-source-6.1 bc flex bison libelf-dev libssl-dev libc6-dev cpio gzip xz-utils make gcc
	# host tier: loop devices, keyutils as a reference peer; findmnt (util-linux)
	# beside the mount source, mkfs.ext4 and debugfs for real filesystem errors
	util-linux keyutils kmod e2fsprogs
	# D-Bus tier: a real dbus-daemon, busctl/gdbus, a dbus-python client
	dbus dbus-bin systemd libglib2.0-bin python3 python3-dbus python3-gi passwd
	# WebSocket tier: a client not written in Go
	python3-websockets python3-jsonschema
	# dashboard tier: real headless Chromium
	chromium
	# package step (scripts/package-test.sh): man pages, the .deb, checks
	# of the installed files (systemd-analyze is in systemd, setpriv in
	# util-linux, kill in procps)
	go-md2man dpkg-dev man-db zsh procps
	# notifyctl's fish completion (ctl tests, package step)
	fish
	# the notifyctl bench beside udevadm monitor --kernel (needs no udevd)
	udev
	# USB vendor/product names for device identity (sources/identity)
	usb.ids
	# D-Bus device objects and polkit (dbusapi): a real polkitd on a
	# private system bus
	polkitd
	# the example applet (examples/applet): a real notification daemon
	# (dunst) under Xvfb, and the screenshot of its popup (import)
	dunst xvfb imagemagick
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing packages: ${missing[*]}; run: sudo $0" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		echo 'deps: go is at /usr/local/go/bin; add it to PATH' >&2
	else
		echo 'deps: no Go toolchain; install Go 1.25 or newer' >&2
	fi
	exit 1
fi
echo "deps: ok"
