#!/usr/bin/env bash
# The "== package" step of make test (also `make package-test`): builds the
# Debian package (scripts/deb.sh), installs it with dpkg into a scratch
# root, and checks what landed there:
#   - the package's file list, modes and contents are exactly those of
#     `make install PREFIX=/usr DESTDIR=…`;
#   - the installed binaries run and report the package's version;
#   - systemd-analyze verify accepts the installed unit under --root (so
#     ExecStart must be the installed binary), and `systemctl --root enable`
#     creates the D-Bus alias the activation file names;
#   - a dbus-daemon with a system-bus configuration loads the installed
#     policy and activation file: the name is activatable, root may own it,
#     nobody may not;
#   - man renders each installed page with no warning at 80 columns and
#     lexgrog reads its NAME;
#   - the bash, zsh and fish completions parse, and bash and fish complete
#     a command;
#   - removing and purging the package leaves none of its files and no
#     dangling enable symlinks (the prerm disables the unit).
# The scratch root is seeded with the host's systemd units and kill(1) (the
# unit's ExecReload), the system the package would be installed on.
# Needs root (dpkg, setpriv); packages from scripts/deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
start=$(date +%s)

fail() {
	echo "package: FAIL: $*" >&2
	exit 1
}
if [ "$(id -u)" -ne 0 ]; then
	case ${CI:-} in
	true | 1) fail "needs root (dpkg --root, a bus user switch); run the tests as root" ;;
	*)
		echo "package: skipped: needs root (fix: sudo make package-test)"
		exit 0
		;;
	esac
fi
for tool in dpkg-deb dpkg-shlibdeps go-md2man systemd-analyze systemctl dbus-daemon busctl man lexgrog setpriv zsh fish; do
	command -v "$tool" >/dev/null || fail "$tool not installed (run scripts/deps.sh)"
done

tmp=$(mktemp -d /tmp/notifyd-package.XXXXXX)
bus_pid=
cleanup() {
	if [ -n "$bus_pid" ]; then kill "$bus_pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT
chmod 0755 "$tmp" # the bus socket is reached as nobody

version=${VERSION:-$(./scripts/version.sh)}
debversion=$(VERSION=$version ./scripts/version.sh --deb)

echo "package: building the .deb ($debversion)"
deb=$(VERSION=$version ./scripts/deb.sh | tail -n1)
[ -f "$deb" ] || fail "scripts/deb.sh made no package"
dpkg-deb --info "$deb" control >"$tmp/control"
grep -qx "Version: $debversion" "$tmp/control" || fail "package version is not $debversion"
grep -qx "Architecture: $(dpkg --print-architecture)" "$tmp/control" || fail "package architecture"
grep -q '^Depends: dbus\b' "$tmp/control" || fail "package does not depend on dbus"

echo "package: make install PREFIX=/usr DESTDIR=… (the reference)"
ref=$tmp/ref
make --no-print-directory install PREFIX=/usr DESTDIR="$ref" VERSION="$version" >"$tmp/install.log" 2>&1 ||
	{ cat "$tmp/install.log" >&2; fail "make install"; }

# The scratch root: merged /usr like the host, the host's systemd units
# (sysinit.target, dbus.socket, multi-user.target: what the unit refers
# to) and /usr/bin/kill; an empty dpkg database.
root=$tmp/root
mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib/systemd" "$root/etc" \
	"$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
for d in bin sbin lib; do ln -s "usr/$d" "$root/$d"; done
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp -a "$(type -P kill)" "$root/usr/bin/kill"
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"
# --force-script-chrootless: the maintainer scripts run here with
# DPKG_ROOT set (the root has no shell); --force-depends: the root has
# no dbus or libc package.
dpkg_root() {
	dpkg --root="$root" --force-script-chrootless --force-depends \
		--log="$root/var/log/dpkg.log" "$@"
}

echo "package: dpkg -i into a scratch root"
dpkg_root -i "$deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -i"; }
[ "$(dpkg-query --root="$root" -W -f='${Status} ${Version}' notifyd)" = "install ok installed $debversion" ] ||
	fail "dpkg does not list notifyd $debversion as installed"

echo "package: file list against make install"
(cd "$ref" && find . -mindepth 1 | sed 's|^\.||' | LC_ALL=C sort) >"$tmp/ref.list"
dpkg-query --root="$root" -L notifyd | grep -vx '/\.' | LC_ALL=C sort >"$tmp/pkg.list"
diff -u --label 'make install' --label 'dpkg -L notifyd' "$tmp/ref.list" "$tmp/pkg.list" ||
	fail "the package's files differ from make install's"
while read -r p; do
	[ -L "$ref$p" ] && fail "$p: make install made a symlink"
	[ "$(stat -c %a "$ref$p")" = "$(stat -c %a "$root$p")" ] || fail "$p: mode $(stat -c %a "$root$p"), make install: $(stat -c %a "$ref$p")"
	[ "$(stat -c %U:%G "$root$p")" = root:root ] || fail "$p: owned by $(stat -c %U:%G "$root$p")"
	if [ -f "$ref$p" ]; then
		cmp -s "$ref$p" "$root$p" || fail "$p differs from make install's (both are built from this tree: was it edited during the run?)"
	fi
done <"$tmp/ref.list"
n=$(grep -c . "$tmp/ref.list")

echo "package: binaries"
got=$("$root/usr/bin/notifyd" --version) || fail "notifyd --version"
[ "$got" = "notifyd $version" ] || fail "notifyd --version says \"$got\", want \"notifyd $version\""
"$root/usr/bin/notifyctl" --help >/dev/null 2>&1 || fail "notifyctl --help"

echo "package: systemd unit"
unit=/usr/lib/systemd/system/notifyd.service
grep -qx "ExecStart=/usr/bin/notifyd" "$root$unit" || fail "$unit: ExecStart is not /usr/bin/notifyd"
out=$(systemd-analyze verify --root="$root" "$unit" 2>&1) && [ -z "$out" ] ||
	fail "systemd-analyze verify --root $unit: $out"
# verify is honest: without the binary the same check fails.
mv "$root/usr/bin/notifyd" "$tmp/notifyd.moved"
if systemd-analyze verify --root="$root" "$unit" >/dev/null 2>&1; then
	fail "systemd-analyze verify passed with /usr/bin/notifyd missing"
fi
mv "$tmp/notifyd.moved" "$root/usr/bin/notifyd"
rating=$(systemd-analyze security --offline=true --root="$root" notifyd.service 2>&1) ||
	fail "systemd-analyze security: $rating"
rating=$(printf '%s\n' "$rating" | tail -n1)
echo "package:   systemd-analyze security: $rating"
systemctl --root="$root" enable notifyd.service >/dev/null 2>&1 || fail "systemctl --root enable notifyd.service"
alias=$(sed -n 's/^SystemdService=//p' "$root/usr/share/dbus-1/system-services/org.notifyd.Notifyd1.service")
# (the link may name /lib/systemd/system: the same directory, merged /usr)
link=$(readlink "$root/etc/systemd/system/$alias") && [ "$root$link" -ef "$root$unit" ] ||
	fail "enable made no $alias -> $unit (the activation file's SystemdService)"
[ -L "$root/etc/systemd/system/multi-user.target.wants/notifyd.service" ] || fail "enable made no multi-user.target.wants link"
exec=$(sed -n 's/^Exec=//p' "$root/usr/share/dbus-1/system-services/org.notifyd.Notifyd1.service")
[ "$exec" = /usr/bin/notifyd ] && [ -x "$root$exec" ] || fail "activation Exec=$exec is not the installed binary"

echo "package: polkit actions"
actions=$root/usr/share/polkit-1/actions/org.notifyd.policy
[ -f "$actions" ] || fail "no polkit actions file at /usr/share/polkit-1/actions/org.notifyd.policy"
ids=$(/usr/bin/python3 -c 'import sys, xml.etree.ElementTree as E; print(" ".join(a.get("id") for a in E.parse(sys.argv[1]).getroot().iter("action")))' "$actions") ||
	fail "polkit actions file is not well-formed XML"
for id in $(sed -n 's/.*"\(org\.notifyd\.[a-z-]*\)".*/\1/p' lsm/polkit.go | sort -u); do
	case " $ids " in *" $id "*) ;; *) fail "lsm/polkit.go asks for $id, which the actions file does not declare (it has: $ids)" ;; esac
done

echo "package: D-Bus policy and activation file"
sock=$tmp/bus.sock
cat >"$tmp/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>$root/usr/share/dbus-1/system.d/org.notifyd.Notifyd1.conf</include>
  <servicedir>$root/usr/share/dbus-1/system-services</servicedir>
</busconfig>
EOF
dbus-daemon --config-file="$tmp/bus.conf" --nofork --print-address=3 3>"$tmp/bus.addr" 2>"$tmp/bus.log" &
bus_pid=$!
for _ in $(seq 100); do
	[ -s "$tmp/bus.addr" ] && break
	kill -0 "$bus_pid" 2>/dev/null || { cat "$tmp/bus.log" >&2; fail "dbus-daemon did not accept the installed policy"; }
	sleep 0.05
done
[ -s "$tmp/bus.addr" ] || fail "dbus-daemon printed no address"
# A system bus raises its fd limit, which a container may refuse: that
# line says nothing about the configuration.
if grep -v 'Failed to set fd limit' "$tmp/bus.log" | grep -q .; then
	cat "$tmp/bus.log" >&2
	fail "dbus-daemon complained about the configuration"
fi
addr=unix:path=$sock
call() { busctl --address="$addr" call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus "$@"; }
call ListActivatableNames | grep -q '"org.notifyd.Notifyd1"' ||
	fail "the bus does not list org.notifyd.Notifyd1 as activatable (installed activation file)"
[ "$(call RequestName su org.notifyd.Notifyd1 0)" = "u 1" ] || fail "root may not own org.notifyd.Notifyd1"
nobody() {
	setpriv --reuid=nobody --regid=nogroup --clear-groups \
		busctl --address="$addr" call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus "$@"
}
out=$(nobody GetId 2>&1) || fail "nobody cannot use the test bus: $out"
if out=$(nobody RequestName su org.notifyd.Notifyd1 0 2>&1); then
	fail "nobody may own org.notifyd.Notifyd1: $out"
fi
case $out in *"Access denied"*) ;; *) fail "nobody's RequestName failed for another reason: $out" ;; esac
kill "$bus_pid" && wait "$bus_pid" 2>/dev/null || true
bus_pid=

echo "package: man pages"
for page in man8/notifyd.8.gz man1/notifyctl.1.gz; do
	f=$root/usr/share/man/$page
	[ -f "$f" ] || fail "no $page"
	if ! MANWIDTH=80 man -l --warnings "$f" >/dev/null 2>"$tmp/man.err" || [ -s "$tmp/man.err" ]; then
		cat "$tmp/man.err" >&2
		fail "man -l --warnings $page"
	fi
	lexgrog "$f" >/dev/null || fail "lexgrog cannot read the NAME section of $page"
done
for p in notifyd notifyctl; do
	man -M "$root/usr/share/man" -w "$p" >/dev/null 2>&1 || fail "man -M <root>/usr/share/man does not find $p"
done

echo "package: shell completions"
bc=$root/usr/share/bash-completion/completions/notifyctl
zc=$root/usr/share/zsh/vendor-completions/_notifyctl
bash -n "$bc" || fail "bash completion does not parse"
got=$(bash -c 'source "$1"; COMP_WORDS=(notifyctl moni); COMP_CWORD=1; _notifyctl; echo "${COMPREPLY[*]}"' _ "$bc")
[ "$got" = monitor ] || fail "bash completion of \"notifyctl moni\" gave \"$got\", want monitor"
zsh -n "$zc" || fail "zsh completion does not parse"
head -n1 "$zc" | grep -qx '#compdef notifyctl' || fail "zsh completion has no #compdef line"
fc=$root/usr/share/fish/vendor_completions.d/notifyctl.fish
fish -n "$fc" || fail "fish completion does not parse"
got=$(fish -c 'source $argv[1]; complete -C "notifyctl moni"' "$fc" | cut -f1)
[ "$got" = monitor ] || fail "fish completion of \"notifyctl moni\" gave \"$got\", want monitor"

echo "package: dpkg -r and -P"
dpkg_root -r notifyd >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -r"; }
[ ! -e "$root/etc/systemd/system/$alias" ] && [ ! -e "$root/etc/systemd/system/multi-user.target.wants/notifyd.service" ] &&
	[ ! -L "$root/etc/systemd/system/$alias" ] || fail "removal left the enable symlinks (prerm)"
dpkg_root -P notifyd >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -P"; }
while read -r p; do
	if [ -f "$ref$p" ] && [ -e "$root$p" ]; then fail "$p left after purge"; fi
done <"$tmp/ref.list"

echo "package: ok: $(basename "$deb"), $n paths, in $(($(date +%s) - start))s"
