#!/usr/bin/python3
"""notifyd-applet: notifyd's device objects as desktop notifications.

A complete example of a notifyd client on D-Bus (dbus-python), in the
style of a udisks2 or UPower applet: it asks notifyd "what is there now?"
with org.freedesktop.DBus.ObjectManager.GetManagedObjects, follows
InterfacesAdded / InterfacesRemoved / PropertiesChanged, and turns each
change into a sentence shown through org.freedesktop.Notifications (the
notification daemon of the desktop session: dunst, xfce4-notifyd, GNOME
Shell, KDE Plasma...).

    notifyd-applet.py                 # notifyd on the system bus
    notifyd-applet.py --bus ADDRESS   # notifyd on a private bus (examples/applet/README.md)
    notifyd-applet.py --list          # print what is plugged in now, and exit

Notifications go to the session bus (DBUS_SESSION_BUS_ADDRESS). With
--json each notification is also printed as one JSON line on stdout.

The sentences (docs/dbus-api.md, "From events to sentences"):

    USB device added        "USB device connected"   "SanDisk Ultra (0781:5581)"
    USB device removed      "USB device removed"     the same name
    disk or partition added "Disk connected"         "WDC WD10EZEX (sdb), 1.0 TB"
    loop attached           "Loop device attached"   "loop0: /srv/images/disk.img"
    loop detached           "Loop device detached"   "loop0 (was /srv/images/disk.img)"
    media change            "Medium changed"         "sr0"
    I/O error               "Disk error"             "WDC WD10EZEX (sdb): critical-medium (3 errors)"
    mount / unmount         "Mounted" / "Unmounted"  "/dev/sdb1 on /media/usb (vfat)"

Only what notifyd's policy lets every local user see is exported as an
object; a private source needs a unicast Subscribe (docs/dbus-api.md).
"""

import argparse
import json
import sys

import dbus
import dbus.bus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.notifyd.Notifyd1"
ROOT = "/org/notifyd/Notifyd1"
OM = "org.freedesktop.DBus.ObjectManager"
PROPS = "org.freedesktop.DBus.Properties"
DEVICE = "org.notifyd.Notifyd1.Device"
BLOCK = "org.notifyd.Notifyd1.Block"
USB = "org.notifyd.Notifyd1.USB"
MOUNT = "org.notifyd.Notifyd1.Mount"

URGENCY_LOW, URGENCY_NORMAL, URGENCY_CRITICAL = 0, 1, 2


def describe(props):
    """The name of an object, as its Description property says it."""
    dev = props.get(DEVICE, {})
    return str(dev.get("Description") or dev.get("Name") or "device")


def kind(props):
    if USB in props:
        return "usb"
    if MOUNT in props:
        return "mount"
    if BLOCK in props:
        if str(props[BLOCK].get("Device", "")).startswith("loop"):
            return "loop"
        return "block"
    return "device"


def added_sentence(props):
    """(summary, body, urgency) for an object that appeared."""
    k = kind(props)
    if k == "usb":
        return "USB device connected", describe(props), URGENCY_NORMAL
    if k == "loop":
        b = props[BLOCK]
        return "Loop device attached", "%s: %s" % (b.get("Device"), b.get("BackingFile")), URGENCY_LOW
    if k == "block":
        return "Disk connected", describe(props), URGENCY_NORMAL
    if k == "mount":
        return "Mounted", describe(props), URGENCY_LOW
    return "Device connected", describe(props), URGENCY_LOW


def removed_sentence(props):
    """(summary, body, urgency) for an object that went."""
    k = kind(props)
    if k == "usb":
        return "USB device removed", describe(props), URGENCY_NORMAL
    if k == "loop":
        b = props[BLOCK]
        return "Loop device detached", "%s (was %s)" % (b.get("Device"), b.get("BackingFile")), URGENCY_LOW
    if k == "block":
        return "Disk removed", describe(props), URGENCY_NORMAL
    if k == "mount":
        return "Unmounted", describe(props), URGENCY_LOW
    return "Device removed", describe(props), URGENCY_LOW


def changed_sentence(props, iface, changed):
    """(summary, body, urgency) for a change worth telling, or None."""
    if iface != DEVICE:
        return None
    if "Errors" in changed and int(changed["Errors"]) > 0:
        n = int(changed["Errors"])
        what = changed.get("LastError") or props.get(DEVICE, {}).get("LastError", "error")
        return ("Disk error" if kind(props) in ("block", "loop") else "Device error",
                "%s: %s (%d error%s)" % (describe(props), what, n, "" if n == 1 else "s"), URGENCY_CRITICAL)
    if changed.get("LastEvent") == "media-change":
        return "Medium changed", str(props.get(BLOCK, {}).get("Device", describe(props))), URGENCY_LOW
    return None


def plain(v):
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    return str(v)


class Applet:
    def __init__(self, notifyd_bus, session_bus, as_json):
        self.bus = notifyd_bus
        self.session = session_bus
        self.json = as_json
        self.objects = {}  # path -> {iface: {prop: value}}

    def notify(self, summary, body, urgency):
        if self.json:
            print(json.dumps({"summary": summary, "body": body, "urgency": urgency}), flush=True)
        if self.session is None:
            return
        n = dbus.Interface(self.session.get_object("org.freedesktop.Notifications", "/org/freedesktop/Notifications"),
                           "org.freedesktop.Notifications")
        hints = dbus.Dictionary({"urgency": dbus.Byte(urgency), "category": "device"}, signature="sv")
        n.Notify("notifyd", dbus.UInt32(0), "drive-removable-media", summary, body,
                 dbus.Array([], signature="s"), hints, dbus.Int32(-1))

    def start(self):
        # Receivers first: a change between the call and the reply is
        # then seen, and the Seq properties line the two up.
        self.bus.add_signal_receiver(self.on_added, dbus_interface=OM, signal_name="InterfacesAdded",
                                     bus_name=NAME, path=ROOT)
        self.bus.add_signal_receiver(self.on_removed, dbus_interface=OM, signal_name="InterfacesRemoved",
                                     bus_name=NAME, path=ROOT)
        self.bus.add_signal_receiver(self.on_changed, dbus_interface=PROPS, signal_name="PropertiesChanged",
                                     bus_name=NAME, path_keyword="path")
        self.bus.add_signal_receiver(self.on_owner, dbus_interface="org.freedesktop.DBus",
                                     signal_name="NameOwnerChanged", arg0=NAME)
        self.refresh(announce=True)

    def refresh(self, announce):
        root = self.bus.get_object(NAME, ROOT, introspect=False)
        self.objects = {str(p): plain(v) for p, v in root.GetManagedObjects(dbus_interface=OM).items()}
        if announce:
            summary, body = plugged_in_now(self.objects)
            self.notify(summary, body, URGENCY_LOW)

    def on_added(self, path, props):
        props = plain(props)
        self.objects[str(path)] = props
        self.notify(*added_sentence(props))

    def on_removed(self, path, _ifaces):
        props = self.objects.pop(str(path), None)
        if props is not None:
            self.notify(*removed_sentence(props))

    def on_changed(self, iface, changed, _invalidated, path=None):
        props = self.objects.get(str(path))
        if props is None:
            return
        changed = plain(changed)
        props.setdefault(str(iface), {}).update(changed)
        s = changed_sentence(props, str(iface), changed)
        if s:
            self.notify(*s)

    def on_owner(self, _name, _old, new):
        # notifyd restarted (or came back): its objects are new ones.
        if new:
            self.refresh(announce=False)


def plugged_in_now(objects):
    """The "what is plugged in now" notification, from GetManagedObjects alone."""
    lines = []
    for path in sorted(objects):
        props = objects[path]
        if kind(props) == "mount":
            continue
        lines.append("• " + describe(props))
    if not lines:
        return "Nothing plugged in", "notifyd sees no removable or attached devices"
    return "Plugged in now", "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bus", help="notifyd's bus address (default: the system bus)")
    ap.add_argument("--list", action="store_true", help="print what is plugged in now and exit")
    ap.add_argument("--json", action="store_true", help="also print each notification as a JSON line")
    ap.add_argument("--no-notify", action="store_true", help="do not send desktop notifications")
    args = ap.parse_args()

    DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(args.bus) if args.bus else dbus.SystemBus()
    if args.list:
        root = bus.get_object(NAME, ROOT, introspect=False)
        objects = {str(p): plain(v) for p, v in root.GetManagedObjects(dbus_interface=OM).items()}
        summary, body = plugged_in_now(objects)
        print(summary + ":\n" + body)
        return
    session = None if args.no_notify else dbus.SessionBus()
    applet = Applet(bus, session, args.json)
    applet.start()
    try:
        GLib.MainLoop().run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
