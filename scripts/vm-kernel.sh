#!/usr/bin/env bash
# vm-kernel.sh prints the path of a bzImage for the VM test tier on stdout;
# everything else goes to stderr.
#
# With NOTIFYD_VM_KERNEL set to an existing file it prints that and builds
# nothing. Otherwise it builds Debian's linux-source-6.1 as tinyconfig plus
# internal/rig/vm/kernel.config (everything built in, no modules), checks that
# every line of the fragment survived `make olddefconfig`, and caches the
# result outside the work tree:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/notifyd/vm/<hash>/bzImage
#
# where <hash> covers the fragment and the kernel source version, so it is
# built once per machine (12-16 min on 2 cores, cold) and reused after that.
# The unpacked source tree is kept next to it (linux-<version>/), so a
# changed fragment is an incremental rebuild (under a minute).
#
# With --cached it only looks: it prints the cached kernel's path, or exits
# with status 3 when there is none (used by go test ./internal/rig/vmtest outside CI).
#
# Env: NOTIFYD_VM_KERNEL (prebuilt kernel), NOTIFYD_VM_KERNEL_SRC (source
# tarball, default /usr/src/linux-source-6.1.tar.xz), JOBS (default nproc).
# The body is one compound command, read whole before it runs, so editing
# this file during a build cannot derail the running copy.
{
set -euo pipefail
log() { echo "vm-kernel: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
t0=$(now)

if [ -n "${NOTIFYD_VM_KERNEL:-}" ]; then
	if [ -f "$NOTIFYD_VM_KERNEL" ]; then
		log "using prebuilt kernel NOTIFYD_VM_KERNEL=$NOTIFYD_VM_KERNEL"
		echo "$NOTIFYD_VM_KERNEL"
		exit 0
	fi
	log "NOTIFYD_VM_KERNEL=$NOTIFYD_VM_KERNEL does not exist"
	exit 1
fi

root=$(cd "$(dirname "$0")/.." && pwd)
frag=$root/internal/rig/vm/kernel.config
tarball=${NOTIFYD_VM_KERNEL_SRC:-/usr/src/linux-source-6.1.tar.xz}
jobs=${JOBS:-$(nproc)}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/notifyd/vm

if [ ! -f "$tarball" ]; then
	log "kernel source $tarball missing (fix: apt-get install -y linux-source-6.1 bc flex bison libelf-dev libssl-dev cpio)"
	exit 1
fi
# The source version: the Debian package version when the tarball is the
# package's, else the tarball's size and mtime.
srcver=""
if [ "$tarball" = /usr/src/linux-source-6.1.tar.xz ]; then
	srcver=$(dpkg-query -W -f '${Version}' linux-source-6.1 2>/dev/null || true)
fi
[ -n "$srcver" ] || srcver=$(stat -c '%s-%Y' "$tarball")
hash=$( { echo "src=$(basename "$tarball") $srcver"; cat "$frag"; } | sha256sum | cut -c1-16)
out=$cache/$hash

if [ -f "$out/bzImage" ]; then
	log "cached kernel $out/bzImage (source $srcver, warm: $(since "$t0"))"
	echo "$out/bzImage"
	exit 0
fi
if [ "${1:-}" = --cached ]; then
	log "no cached kernel at $out/bzImage (build it: ./scripts/vm-kernel.sh)"
	exit 3
fi

for tool in make gcc bc flex bison; do
	command -v "$tool" >/dev/null || {
		log "$tool missing (fix: apt-get install -y build-essential bc flex bison libelf-dev libssl-dev cpio)"
		exit 1
	}
done

mkdir -p "$cache"
# One build at a time per machine: a second caller waits and then finds
# the cached kernel.
exec 9>"$cache/build.lock"
if ! flock -n 9; then
	log "another build is running; waiting for $cache/build.lock"
	flock 9
	if [ -f "$out/bzImage" ]; then
		log "cached kernel $out/bzImage (built by the other run, $(since "$t0"))"
		echo "$out/bzImage"
		exit 0
	fi
fi

src=$cache/linux-$srcver
if [ ! -f "$src/Makefile" ]; then
	log "unpacking $tarball into $src"
	rm -rf "$src.tmp"
	mkdir -p "$src.tmp"
	tar -C "$src.tmp" --strip-components=1 -xf "$tarball"
	mv "$src.tmp" "$src"
	log "unpacked in $(since "$t0")"
fi

cd "$src"
tc=$(now)
make -s tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$frag" >/dev/null
make -s olddefconfig >/dev/null
bad=0
while IFS= read -r l; do
	case "$l" in
	CONFIG_*=*)
		sym=${l%%=*}
		if ! grep -qxF "$l" .config; then
			log "fragment line '$l' did not survive olddefconfig: got '$(grep "^$sym=\|^# $sym is not set" .config || echo absent)'"
			bad=1
		fi
		;;
	"# CONFIG_"*" is not set")
		sym=${l#\# }
		sym=${sym%% *}
		if grep -q "^$sym=" .config; then
			log "fragment line '$l' did not survive olddefconfig: got '$(grep "^$sym=" .config)'"
			bad=1
		fi
		;;
	esac
done <"$frag"
[ "$bad" = 0 ] || { log "kernel config fragment $frag not fully applied"; exit 1; }
log "configured in $(since "$tc") ($(grep -c '=y$' .config) options =y)"

tb=$(now)
log "building bzImage with -j$jobs (log: $src/build.log; a cold build takes 12-16 min on 2 cores)"
if ! make -j"$jobs" bzImage >build.log 2>&1; then
	tail -40 build.log >&2
	log "kernel build failed (full log: $src/build.log)"
	exit 1
fi
mkdir -p "$out.tmp"
cp arch/x86/boot/bzImage "$out.tmp/bzImage"
cp .config "$out.tmp/config"
make -s kernelrelease >"$out.tmp/release" 2>/dev/null || true
echo "$srcver" >"$out.tmp/source-version"
rm -rf "$out"
mv "$out.tmp" "$out"
log "built $(cat "$out/release" 2>/dev/null) in $(since "$tb") (cold: $(since "$t0") in total)"
echo "$out/bzImage"
exit 0
}
