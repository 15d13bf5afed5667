#!/usr/bin/env bash
# Builds the Debian package from the same files as `make install`: stages
# `make install PREFIX=/usr DESTDIR=out/deb/root`, adds DEBIAN/ (control
# from packaging/debian/control.in, the maintainer scripts beside it,
# md5sums) and runs dpkg-deb. Prints the .deb's path as its last line.
#
#   VERSION=1.2.0 scripts/deb.sh         the version (default: scripts/version.sh)
#   DEB_MAINTAINER='Name <addr>'         the Maintainer field
#
# Needs dpkg-dev (dpkg-shlibdeps) and go-md2man: scripts/deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

version=${VERSION:-$(./scripts/version.sh)}
debversion=$(VERSION=$version ./scripts/version.sh --deb)
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-notifyd developers <notifyd@localhost>}
for tool in dpkg-deb dpkg-shlibdeps go-md2man; do
	command -v "$tool" >/dev/null || { echo "deb: $tool not installed (scripts/deps.sh)" >&2; exit 1; }
done

out=$PWD/out/deb
stage=$out/root
rm -rf "$stage"
mkdir -p "$stage"
make --no-print-directory install PREFIX=/usr DESTDIR="$stage" VERSION="$version" >"$out/install.log" 2>&1 ||
	{ cat "$out/install.log" >&2; echo "deb: make install failed" >&2; exit 1; }

# Run-time dependencies of the binaries beyond dbus: what they link
# (libc with cgo; nothing for CGO_ENABLED=0 builds), as dpkg-shlibdeps
# finds it. It wants a debian/control to read.
shl=$(mktemp -d)
trap 'rm -rf "$shl"' EXIT
printf 'Source: notifyd\n\nPackage: notifyd\nArchitecture: any\n' >"$shl/control.tmp"
mkdir "$shl/debian" && mv "$shl/control.tmp" "$shl/debian/control"
bins=()
for b in "$stage"/usr/bin/*; do bins+=("-e$b"); done
shlibs=$(cd "$shl" && dpkg-shlibdeps -O "${bins[@]}" 2>"$shl/err") ||
	{ cat "$shl/err" >&2; echo "deb: dpkg-shlibdeps failed" >&2; exit 1; }
shlibs=${shlibs#shlibs:Depends=}

mkdir -m 0755 "$stage/DEBIAN"
size=$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s|@VERSION@|$debversion|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@SIZE@|$size|" -e "s|, @SHLIBS@|${shlibs:+, $shlibs}|" \
	packaging/debian/control.in >"$stage/DEBIAN/control"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"

deb=$out/notifyd_${debversion}_${arch}.deb
rm -f "$out"/notifyd_*.deb
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)} \
	dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
