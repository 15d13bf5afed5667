#!/usr/bin/python3
"""A notifyd WebSocket client written from docs/websocket.md only.

Usage: wsclient.py URL TOKEN COUNT
Connects to URL (ws://127.0.0.1:PORT) with the bearer token in the
Authorization header, subscribes with a subscribe message, prints "READY"
after the hello, collects COUNT events (from event and batch frames), asks
for the status, and prints one JSON summary line. A second connection
checks that a bad filter in the URL is refused with HTTP 400 and a position.
"""
import asyncio
import json
import sys
import urllib.parse

import websockets


async def main(url, token, count):
    headers = {"Authorization": "Bearer " + token}
    out = {"events": [], "batches": 0}
    async with websockets.connect(url + "/v1/ws", extra_headers=headers, compression=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "filter": "source == usb", "policy": "drop-oldest", "queue": 5000}))
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        assert hello["protocol"] == 1, hello
        out["hello"] = hello
        print("READY", flush=True)
        while len(out["events"]) < count:
            msg = json.loads(await ws.recv())
            if msg["type"] == "batch":
                out["batches"] += 1
                items = msg["events"]
            elif msg["type"] in ("event", "loss"):
                items = [msg]
            else:
                raise AssertionError("unexpected message %r" % msg)
            for it in items:
                out["events"].append({"type": it["type"], "seq": it["seq"], "source": it["source"],
                                      "name": it.get("usb", {}).get("name")})
        await ws.send(json.dumps({"type": "status", "id": "py"}))
        st = json.loads(await ws.recv())
        assert st["type"] == "status" and st["id"] == "py", st
        out["status_published"] = st["hub"]["published"]
        await ws.send("this is not json")
        err = json.loads(await ws.recv())
        out["error_code"] = err["code"]

    bad = url + "/v1/ws?" + urllib.parse.urlencode({"filter": "source ==", "token": token})
    try:
        async with websockets.connect(bad):
            out["bad_filter"] = "connected"
    except websockets.exceptions.InvalidStatusCode as e:
        out["bad_filter"] = e.status_code
    try:
        async with websockets.connect(url + "/v1/ws"):
            out["no_token"] = "connected"
    except websockets.exceptions.InvalidStatusCode as e:
        out["no_token"] = e.status_code
    print(json.dumps(out), flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
