#!/usr/bin/python3
"""A stand-in desktop applet for notifyd's D-Bus service, on dbus-python.

Modes:
  applet.py subscribe ADDRESS FILTER [QUEUE_DEPTH]
      Subscribe with FILTER and print one JSON line per signal received on
      the subscription (started, event, loss, ended), after a first line
      {"kind": "subscribed", "path": ..., "unique": ...}. Exits when stdin
      closes, when the subscription ends, or on SIGTERM.
  applet.py listen ADDRESS EAVESDROP
      A bystander on the same bus: adds a match rule for every signal of
      the subscription interface (with eavesdrop='true' when EAVESDROP is
      "1"), prints {"kind": "ready", ...}, and on stdin EOF prints
      {"kind": "count", "n": N} with the number of such signals it got.
  applet.py history ADDRESS SINCE FILTER
      Calls History, checks the memfd's seals, maps it read-only, checks
      the stream header and that writing fails, and prints
      {"kind": "history", "count": N, "seals": S, "entries": E, "size": B,
       "write_error": "...", "first_seq": Q}.

Every line is flushed at once so that the test can follow along.
"""

import fcntl
import json
import mmap
import os
import struct
import signal
import sys

import dbus
import dbus.bus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.notifyd.Notifyd1"
PATH = "/org/notifyd/Notifyd1"
MANAGER = "org.notifyd.Notifyd1.Manager"
SUBSCRIPTION = "org.notifyd.Notifyd1.Subscription"

EVENT_ARGS = (
    "seq time_usec source subtype origin tag object snapshot removed "
    "key_id key_aux key_type key_description major minor device sector "
    "usb_name usb_busnum usb_devnum usb_vendor usb_product usb_error props raw"
).split()
LOSS_ARGS = "seq time_usec source origin count estimated from_seq to_seq tag reason".split()
STARTED_ARGS = "epoch seq resumed recovered snapshot_seq snapshot_count".split()


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def plain(v):
    """dbus-python types to JSON-able Python values."""
    if isinstance(v, dbus.Array) and v.signature == "y":
        return bytes(v).hex()
    if isinstance(v, (dbus.Array, list)):
        return [plain(x) for x in v]
    if isinstance(v, dbus.Dictionary):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (dbus.String, dbus.ObjectPath)):
        return str(v)
    if isinstance(v, (dbus.Byte, dbus.Int16, dbus.Int32, dbus.Int64,
                      dbus.UInt16, dbus.UInt32, dbus.UInt64)):
        return int(v)
    return v


def on_stdin_eof(loop, fn=None):
    def cb(_fd, cond):
        data = os.read(0, 4096)
        if data:
            return True
        if fn:
            fn()
        loop.quit()
        return False
    GLib.io_add_watch(0, GLib.IO_IN | GLib.IO_HUP, cb)


def subscribe(address, flt, depth):
    loop = GLib.MainLoop()
    bus = dbus.bus.BusConnection(address)
    mine = {}

    def on_signal(*args, **kw):
        member, path = kw["member"], kw["path"]
        # Only our own subscription's signals count; the service never
        # sends us anyone else's, and the test checks the path too.
        names = {"Event": EVENT_ARGS, "Loss": LOSS_ARGS, "Started": STARTED_ARGS,
                 "Ended": ["reason"]}.get(member)
        if names is None:
            return
        rec = {"kind": member.lower(), "path": str(path), "dest": kw["dest"]}
        rec.update({n: plain(a) for n, a in zip(names, args)})
        out(rec)
        if member == "Ended" and path == mine.get("path"):
            loop.quit()

    # Receive before subscribing: the first signals may follow the reply
    # immediately. No match rule is needed for unicast signals, but
    # dbus-python dispatches only what a receiver was registered for.
    bus.add_signal_receiver(on_signal, dbus_interface=SUBSCRIPTION,
                            member_keyword="member", path_keyword="path",
                            destination_keyword="dest")
    manager = dbus.Interface(bus.get_object(NAME, PATH), MANAGER)
    opts = dbus.Dictionary({}, signature="sv")
    if depth:
        opts["queue-depth"] = dbus.UInt32(int(depth))
    try:
        path = manager.Subscribe(flt, opts)
    except dbus.DBusException as e:
        out({"kind": "error", "name": e.get_dbus_name(), "message": e.get_dbus_message()})
        return
    mine["path"] = str(path)
    out({"kind": "subscribed", "path": str(path), "unique": bus.get_unique_name(), "pid": os.getpid()})
    on_stdin_eof(loop)
    signal.signal(signal.SIGTERM, lambda *a: loop.quit())
    loop.run()


def listen(address, eavesdrop):
    loop = GLib.MainLoop()
    bus = dbus.bus.BusConnection(address)
    count = [0]

    def on_message(_bus, msg):
        if msg.get_type() == 4 and msg.get_interface() == SUBSCRIPTION:  # signal
            count[0] += 1
        return None

    rule = "type='signal',interface='%s'" % SUBSCRIPTION
    bus.add_match_string(rule)
    refused = None
    if eavesdrop == "1":
        try:
            bus.add_match_string(rule + ",eavesdrop='true'")
        except dbus.DBusException as e:  # a bus may refuse outright
            refused = str(e)
    bus.add_message_filter(on_message)
    # A round trip to the bus: the match rules are in force after it.
    bus.get_unique_name()
    dbus.Interface(bus.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus"),
                   "org.freedesktop.DBus").GetId()
    out({"kind": "ready", "unique": bus.get_unique_name(), "uid": os.getuid()})
    def report():
        if refused:
            out({"kind": "eavesdrop-refused", "error": refused})
        out({"kind": "count", "n": count[0]})
    on_stdin_eof(loop, report)
    loop.run()


def history(address, since, flt):
    bus = dbus.bus.BusConnection(address)
    manager = dbus.Interface(bus.get_object(NAME, PATH), MANAGER)
    fd_obj, count = manager.History(dbus.UInt64(int(since)), flt)
    fd = fd_obj.take()
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    size = os.fstat(fd).st_size
    try:
        os.pwrite(fd, b"x", 0)
        write_error = ""
    except OSError as e:
        write_error = os.strerror(e.errno)
    m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    magic, version, order, _, entries = struct.unpack_from("<8sHccI", m, 0)
    first_seq = struct.unpack_from("<Q", m, 16 + 12)[0] if entries else 0
    out({"kind": "history", "count": int(count), "seals": seals, "size": size,
         "magic": magic.decode(), "version": version, "entries": entries,
         "write_error": write_error, "first_seq": first_seq})


def main():
    DBusGMainLoop(set_as_default=True)
    mode = sys.argv[1]
    if mode == "subscribe":
        subscribe(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
    elif mode == "listen":
        listen(sys.argv[2], sys.argv[3])
    elif mode == "history":
        history(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
