#!/usr/bin/python3
"""Device-object client for the dbusapi tests, in two flavours.

    objects.py ADDRESS dbus-python|gdbus

dbus-python: GetManagedObjects and the InterfacesAdded / InterfacesRemoved
/ PropertiesChanged signals by hand. gdbus: Gio.DBusObjectManagerClient,
as a GTK applet would use it. Both print one JSON object per line:

    {"kind": "ready"}
    {"kind": "managed", "objects": {path: {iface: {prop: value}}}}
    {"kind": "added", "path": ..., "props": {...}}
    {"kind": "removed", "path": ..., "interfaces": [...]}
    {"kind": "changed", "path": ..., "iface": ..., "props": {...}}
    {"kind": "getall", "path": ..., "props": {...}} or {"kind": "getall", "error": NAME}
    {"kind": "flood", "ok": N, "errors": {NAME: N}}

and read commands on stdin: "get", "getall PATH", "flood N", or EOF to quit.
"""
import json
import sys
import threading

from gi.repository import GLib

NAME = "org.notifyd.Notifyd1"
ROOT = "/org/notifyd/Notifyd1"
OM = "org.freedesktop.DBus.ObjectManager"
PROPS = "org.freedesktop.DBus.Properties"


def out(**kw):
    sys.stdout.write(json.dumps(kw, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def plain(v):
    """dbus-python values to JSON-able ones."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    return str(v)


def gv(v):
    """GVariant (or unpacked) values to JSON-able ones."""
    if isinstance(v, GLib.Variant):
        v = v.unpack()
    return plain(v)


def run_dbus_python(addr, loop):
    import dbus
    import dbus.mainloop.glib

    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(addr)
    bus.add_signal_receiver(lambda p, props: out(kind="added", path=str(p), props=plain(props)),
                            dbus_interface=OM, signal_name="InterfacesAdded", bus_name=NAME, path=ROOT)
    bus.add_signal_receiver(lambda p, ifaces: out(kind="removed", path=str(p), interfaces=plain(ifaces)),
                            dbus_interface=OM, signal_name="InterfacesRemoved", bus_name=NAME, path=ROOT)
    bus.add_signal_receiver(lambda iface, changed, inval, path=None: out(kind="changed", path=str(path), iface=str(iface), props=plain(changed)),
                            dbus_interface=PROPS, signal_name="PropertiesChanged", bus_name=NAME, path_keyword="path")
    root = bus.get_object(NAME, ROOT, introspect=False)

    def get():
        out(kind="managed", objects=plain(root.GetManagedObjects(dbus_interface=OM)))

    def getall(path):
        try:
            props = bus.get_object(NAME, path, introspect=False).GetAll("", dbus_interface=PROPS)
            out(kind="getall", path=path, props=plain(props))
        except dbus.exceptions.DBusException as e:
            out(kind="getall", path=path, error=e.get_dbus_name())

    def flood(n):
        res = {"ok": 0, "errors": {}, "left": n}

        def done():
            res["left"] -= 1
            if res["left"] == 0:
                out(kind="flood", ok=res["ok"], errors=res["errors"])

        def ok(_):
            res["ok"] += 1
            done()

        def err(e):
            name = e.get_dbus_name()
            res["errors"][name] = res["errors"].get(name, 0) + 1
            done()

        for _ in range(n):
            root.GetManagedObjects(dbus_interface=OM, reply_handler=ok, error_handler=err, timeout=120)

    return get, getall, flood


def run_gdbus(addr, loop):
    from gi.repository import Gio

    conn = Gio.DBusConnection.new_for_address_sync(
        addr, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
    mgr = Gio.DBusObjectManagerClient.new_sync(conn, Gio.DBusObjectManagerClientFlags.DO_NOT_AUTO_START, NAME, ROOT, None, None, None)

    def props_of(obj):
        res = {}
        for iface in obj.get_interfaces():
            p = {}
            for name in iface.get_cached_property_names():
                p[name] = gv(iface.get_cached_property(name))
            res[iface.get_interface_name()] = p
        return res

    def on_added(_m, obj):
        out(kind="added", path=obj.get_object_path(), props=props_of(obj))

    def on_removed(_m, obj):
        out(kind="removed", path=obj.get_object_path(), interfaces=[i.get_interface_name() for i in obj.get_interfaces()])

    def on_changed(_m, obj, iface, changed, _inval):
        out(kind="changed", path=obj.get_object_path(), iface=iface.get_interface_name(), props=gv(changed))

    mgr.connect("object-added", on_added)
    mgr.connect("object-removed", on_removed)
    mgr.connect("interface-proxy-properties-changed", on_changed)

    def get():
        out(kind="managed", objects={o.get_object_path(): props_of(o) for o in mgr.get_objects()})

    def getall(path):
        try:
            r = conn.call_sync(NAME, path, PROPS, "GetAll", GLib.Variant("(s)", ("",)), None, Gio.DBusCallFlags.NONE, -1, None)
            out(kind="getall", path=path, props=gv(r)[0])
        except GLib.Error as e:
            out(kind="getall", path=path, error=Gio.DBusError.get_remote_error(e))

    def flood(n):
        res = {"ok": 0, "errors": {}, "left": n}

        def done(c, r):
            try:
                c.call_finish(r)
                res["ok"] += 1
            except GLib.Error as e:
                name = Gio.DBusError.get_remote_error(e)
                res["errors"][name] = res["errors"].get(name, 0) + 1
            res["left"] -= 1
            if res["left"] == 0:
                out(kind="flood", ok=res["ok"], errors=res["errors"])

        for _ in range(n):
            conn.call(NAME, ROOT, OM, "GetManagedObjects", None, None, Gio.DBusCallFlags.NONE, 120000, None, done)

    return get, getall, flood


def main():
    addr, flavour = sys.argv[1], sys.argv[2]
    loop = GLib.MainLoop()
    get, getall, flood = (run_dbus_python if flavour == "dbus-python" else run_gdbus)(addr, loop)

    def reader():
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "get":
                GLib.idle_add(lambda: get() and False)
            elif words[0] == "getall":
                p = words[1]
                GLib.idle_add(lambda: getall(p) and False)
            elif words[0] == "flood":
                n = int(words[1])
                GLib.idle_add(lambda: flood(n) and False)
        GLib.idle_add(loop.quit)

    threading.Thread(target=reader, daemon=True).start()
    GLib.idle_add(lambda: out(kind="ready") and False)
    loop.run()


if __name__ == "__main__":
    main()
