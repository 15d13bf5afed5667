#!/bin/sh
# One command: build notifyd, start it on a private bus (dev-bus.conf),
# and run the example applet, which shows "what is plugged in now" and
# then every device that comes and goes as a desktop notification on your
# session's notification daemon. Ctrl-C stops all three.
#
#   examples/applet/demo.sh            # from a clean checkout
#   examples/applet/demo.sh --json     # also print each notification
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
dir=${XDG_RUNTIME_DIR:-/tmp}/notifyd-applet-demo.$$
mkdir -p "$dir"
export PATH="$PATH:/usr/local/go/bin"
(cd "$top" && go build -o "$dir/notifyd" ./cmd/notifyd)

dbus-daemon --config-file="$here/dev-bus.conf" --address="unix:path=$dir/bus" \
	--fork --print-pid=3 3>"$dir/bus.pid"
bus="unix:path=$dir/bus"
cat >"$dir/notifyd.toml" <<CONF
[daemon]
runtime_dir = "$dir/run"
save_history = false
[sources]
keys = false
[websocket]
listen = "off"
[dbus]
bus = "$bus"
CONF
"$dir/notifyd" --config "$dir/notifyd.toml" >"$dir/notifyd.log" 2>&1 &
nd=$!
trap 'kill $nd 2>/dev/null; kill "$(cat "$dir/bus.pid")" 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
# wait until notifyd owns its name on the bus
i=0
until gdbus call --address "$bus" --dest org.freedesktop.DBus --object-path /org/freedesktop/DBus \
	--method org.freedesktop.DBus.NameHasOwner org.notifyd.Notifyd1 2>/dev/null | grep -q true; do
	i=$((i + 1)); [ $i -lt 200 ] || { cat "$dir/notifyd.log"; exit 1; }
	sleep 0.05
done
echo "notifyd on $bus (log: $dir/notifyd.log); plug something in, or: sudo losetup -f --show FILE"
# Debian's python3 has python3-dbus and python3-gi (one earlier on PATH,
# such as a pyenv shim, may not)
py=python3; [ -x /usr/bin/python3 ] && py=/usr/bin/python3
"$py" "$here/notifyd-applet.py" --bus "$bus" "$@"
