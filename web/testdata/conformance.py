#!/usr/bin/python3
"""Protocol 1.1 conformance client for notifyd, written from
docs/websocket.md and docs/websocket.schema.json only (not from the Go
types). It validates every frame the server sends against the schema, and
every example of the docs' 1.1 transcript, and checks the behaviour the
docs promise. It prints one JSON summary line on stdout and exits non-zero
with a message on the first broken promise.

usage: conformance.py --schema FILE --doc FILE --out FILE
                      (--tcp ws://HOST:PORT --token TOKEN | --unix PATH)
"""

import argparse
import asyncio
import json
import re
import sys

import jsonschema
import websockets

args = None
validators = {}
checked = {"client": 0, "server": 0}


def fail(msg):
    print("conformance: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def validate(kind, msg):
    errs = list(validators[kind].iter_errors(msg))
    if errs:
        fail("%s message does not match the schema: %s\n  %s" % (kind, json.dumps(msg)[:400], errs[0].message[:300]))
    checked[kind] += 1


def check_doc_examples(path):
    text = open(path, encoding="utf-8").read()
    start = text.index("## Protocol 1.1")
    section = text[start:text.index("\n## ", start + 10)]
    n = 0
    for block in re.findall(r"```json\n(.*?)```", section, re.S):
        for line in block.splitlines():
            line = line.strip()
            if not line:
                continue
            direction, body = line[0], line[1:].strip()
            try:
                msg = json.loads(body)
            except ValueError as e:
                fail("docs example is not JSON: %s (%s)" % (body[:120], e))
            validate("client" if direction == ">" else "server", msg)
            n += 1
    check(n >= 10, "the docs' 1.1 transcript has only %d examples" % n)
    return n


class Conn:
    """One 1.1 connection: a reader task sorts frames per subscription."""

    def __init__(self, ws):
        self.ws = ws
        self.frames = asyncio.Queue()

    async def send(self, msg):
        validate("client", msg)
        await self.ws.send(json.dumps(msg))

    async def recv(self, timeout=10, sample=False):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        check(isinstance(raw, str), "the server sent a binary frame")
        msg = json.loads(raw)
        self.n = getattr(self, "n", 0) + 1
        if not sample or self.n % 100 == 0:
            validate("server", msg)
        return msg

    async def until(self, pred, what, timeout=10, keep=None):
        """Read frames until pred(msg); frames before it go to keep."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            left = end - loop.time()
            check(left > 0, "timed out waiting for " + what)
            msg = await self.recv(left)
            if pred(msg):
                return msg
            if keep is not None:
                keep(msg)


def parse_pos(p):
    epoch, seq = p.split(":")
    return epoch, int(seq)


class Tally:
    """What one subscription generation handed over, as the client saw it."""

    def __init__(self, flt):
        self.filter = flt
        self.delivered = 0
        self.lost = 0
        self.seqs = []
        self.losses = []

    def take(self, ev):
        if ev["type"] == "snapshot":
            return
        if ev["type"] == "loss":
            c = ev["loss"]["count"]
            self.lost += 1 if c is None else c
            self.losses.append((ev["loss"].get("from_seq", 0), ev["loss"].get("to_seq", 0)))
            return
        check(not self.seqs or ev["seq"] > self.seqs[-1], "seqs not increasing within a subscription: %d after %d" % (ev["seq"], self.seqs[-1] if self.seqs else 0))
        self.seqs.append(ev["seq"])
        self.delivered += 1


def wanted(flt, ev):
    if flt == "source == block":
        return ev["source"] == "block"
    if flt == "source == usb":
        return ev["source"] == "usb"
    return True


async def connect():
    if args.tcp:
        return await websockets.connect(args.tcp + "/v1/ws", extra_headers={"Authorization": "Bearer " + args.token}, max_size=8 << 20)
    return await websockets.unix_connect(args.unix, "ws://notifyd/v1/ws", max_size=8 << 20)


async def session(c):
    await c.send({"type": "hello", "protocol": 1, "minor": 1, "id": "h"})
    h = await c.recv()
    check(h["type"] == "hello" and h.get("minor") == 1 and h.get("id") == "h", "session hello: %r" % h)
    return h


async def main():
    out = {"transport": "tcp" if args.tcp else "unix"}
    ws = await connect()
    c = Conn(ws)
    h = await session(c)
    epoch = h["epoch"]
    out["uid"] = h.get("uid")

    def route(m, tallies):
        if m["type"] == "batch":
            t = tallies.get(m["sub"])
            check(t is not None, "a batch for unknown subscription %r" % m["sub"])
            for ev in m["events"]:
                if ev["type"] == "event":
                    check(wanted(t.filter, ev), "sub %s (%s) got a %s event" % (m["sub"], t.filter, ev["source"]))
                t.take(ev)

    # Three subscriptions on one connection, under the load the test makes.
    tallies = {}
    subs = {"a": "source == block", "b": "source == usb", "c": ""}
    for name, flt in subs.items():
        req = {"type": "subscribe", "id": "s-" + name, "sub": name, "filter": flt}
        if name == "c":
            req.update({"queue": 16, "policy": "drop-oldest"})
        await c.send(req)
        m = await c.until(lambda m: m["type"] in ("subscribed", "error") and m.get("sub") == name, "subscribed " + name,
                          keep=lambda m: route(m, tallies))
        check(m["type"] == "subscribed" and m["id"] == "s-" + name, "subscribe %s: %r" % (name, m))
        tallies[name] = Tally(flt)

    # Let events flow; subscription c's queue of 16 overflows now and then
    # while we do not read.
    await asyncio.sleep(0.3)
    for _ in range(200):
        try:
            route(await c.recv(0.02), tallies)
        except asyncio.TimeoutError:
            break

    # Change a's filter under load: what the old filter queued comes first,
    # then "updated", then the new filter's events after position.
    await c.send({"type": "update", "id": "u", "sub": "a", "filter": "source == usb || source == block"})
    u = await c.until(lambda m: m["type"] in ("updated", "error") and m.get("sub") == "a", "updated a", keep=lambda m: route(m, tallies))
    check(u["type"] == "updated" and u["id"] == "u", "update: %r" % u)
    old = tallies["a"]
    check((old.delivered, old.lost) == (u["delivered"], u["lost"]),
          "old filter of a: client counted delivered %d lost %d, server says %d %d" % (old.delivered, old.lost, u["delivered"], u["lost"]))
    _, upos = parse_pos(u["position"])
    check(not old.seqs or old.seqs[-1] <= upos, "position %d before the last event %d of the old filter" % (upos, old.seqs[-1] if old.seqs else 0))
    tallies["a"] = Tally("source == usb || source == block")
    generations = [("a-old", old, u["delivered"], u["lost"])]

    await asyncio.sleep(0.3)
    for _ in range(400):
        try:
            route(await c.recv(0.02), tallies)
        except asyncio.TimeoutError:
            break

    # Unsubscribe everything: the server's counts equal the client's.
    for name in list(subs):
        await c.send({"type": "unsubscribe", "id": "x-" + name, "sub": name})
        m = await c.until(lambda m: m["type"] == "unsubscribed" and m["sub"] == name, "unsubscribed " + name, keep=lambda m: route(m, tallies))
        check(m["reason"] == "unsubscribed" and m["id"] == "x-" + name, "unsubscribed: %r" % m)
        t = tallies.pop(name)
        generations.append((name, t, m["delivered"], m["lost"]))
    for name, t, d, l in generations:
        check((t.delivered, t.lost) == (d, l), "sub %s: client counted delivered %d lost %d, server says %d %d" % (name, t.delivered, t.lost, d, l))
        check(t.delivered > 0, "sub %s received nothing under load" % name)
    out["counts"] = {name: [d, l] for name, _, d, l in generations}
    out["c_lost"] = generations[-1][3]

    # Nothing skipped, nothing repeated after the filter change: the new
    # filter's events after position, from history, are what a received
    # (or covered by a loss).
    new = [g for g in generations if g[0] == "a"][0][1]
    if new.seqs:
        # Page forwards (since the last event of a page, while more is
        # true): under load a receives more than one page holds.
        hist, since = [], upos
        while True:
            await c.send({"type": "history", "id": "chk", "filter": new.filter, "since": "%s:%d" % (epoch, since), "limit": 10000})
            frames = await history_frames(c, "chk")
            page = [ev["seq"] for f in frames for ev in f["events"] if ev["type"] == "event"]
            hist += page
            if not frames[-1]["more"] or not page or page[-1] >= new.seqs[-1]:
                break
            since = page[-1]
        want = [s for s in hist if s <= new.seqs[-1] and not any(a <= s <= b for a, b in new.losses)]
        check(want == new.seqs, "after the update, a received %d events, history has %d in the same range (first differing: %s)" %
              (len(new.seqs), len(want), next((x for x in zip(want, new.seqs) if x[0] != x[1]), None)))

    # History paged backwards equals the same range read forwards, and is
    # handed to the Go test to compare with the memfd history.
    pages, before = [], 0
    for _ in range(5):
        req = {"type": "history", "id": "p", "filter": "source == block", "limit": 200}
        if before:
            req["before"] = before
        await c.send(req)
        frames = await history_frames(c, "p")
        seqs = [ev["seq"] for f in frames for ev in f["events"] if ev["type"] == "event"]
        check(len(seqs) == 200 or not frames[-1]["more"], "a page of %d events with more" % len(seqs))
        pages = seqs + pages
        if not frames[-1]["more"]:
            break
        before = seqs[0]
    check(pages == sorted(set(pages)), "pages overlap or are out of order")
    out["pages"] = pages
    await c.send({"type": "history", "id": "f", "filter": "source == block", "since": "%s:%d" % (epoch, pages[0] - 1), "limit": len(pages)})
    fwd = await history(c, "f")
    check(fwd == pages, "history forwards (%d) differs from the pages backwards (%d)" % (len(fwd), len(pages)))

    # A history from another epoch starts with a loss and is not recovered.
    await c.send({"type": "history", "id": "e", "since": "0000000000000001:5", "limit": 3})
    frames = await history_frames(c, "e")
    check(not frames[0]["recovered"] and frames[0]["events"][0]["type"] == "loss", "history from another epoch: %r" % frames[0])

    # A huge range is answered in bounded frames.
    await c.send({"type": "history", "id": "big", "since": "%s:0" % epoch, "limit": 10000})
    frames = await history_frames(c, "big")
    check(all(len(f["events"]) <= h["limits"]["batch_events"] for f in frames), "a history frame beyond batch_events")
    out["big_frames"] = len(frames)

    # Bad input: each a clear in-band error; the connection goes on.
    await c.send({"type": "subscribe", "id": "d1", "sub": "dup", "filter": "source == block"})
    await c.until(lambda m: m["type"] == "subscribed", "subscribed dup")
    await c.send({"type": "subscribe", "id": "d2", "sub": "dup"})
    m = await c.until(lambda m: m["type"] == "error", "error for a reused name", keep=lambda m: None)
    check(m["code"] == "already-subscribed" and m["sub"] == "dup" and m["id"] == "d2", "reused name: %r" % m)
    await ws.send(json.dumps({"type": "frobnicate", "id": "z"}))
    m = await c.until(lambda m: m["type"] == "error", "error for an unknown type", keep=lambda m: None)
    check(m["code"] == "unknown-type", "unknown type: %r" % m)
    await c.send({"type": "unsubscribe", "id": "n", "sub": "nosuch"})
    m = await c.until(lambda m: m["type"] == "error", "error for an unknown sub", keep=lambda m: None)
    check(m["code"] == "unknown-sub", "unknown sub: %r" % m)
    await ws.send(json.dumps({"type": "history", "id": "sb", "since": "%s:1" % epoch, "before": 5}))
    m = await c.until(lambda m: m["type"] == "error", "error for since with before", keep=lambda m: None)
    check(m["code"] == "bad-request", "since with before: %r" % m)
    # 10 000 subscriptions on one connection: the per-user limits stop
    # them with "limit"; the connection and the daemon are unharmed.
    opened, limited = 1, 0

    async def flood():
        for i in range(10000):
            await ws.send(json.dumps({"type": "subscribe", "id": "m%d" % i, "sub": "m%d" % i, "filter": "source == key"}))

    sender = asyncio.create_task(flood())  # answers are read meanwhile, as a client must
    while opened + limited < 10001:
        m = await c.recv(30, sample=True)  # a sample of the 10000 answers is validated
        if m["type"] == "subscribed":
            opened += 1
        elif m["type"] == "error":
            check(m["code"] == "limit", "subscription %s refused with %r" % (m.get("sub"), m))
            limited += 1
    await sender
    check(limited > 0 and opened <= h["limits"]["subscriptions"], "10000 subscriptions: %d opened, %d limited" % (opened, limited))
    out["opened"], out["limited"] = opened, limited
    await c.send({"type": "status", "id": "st"})
    m = await c.until(lambda m: m["type"] == "status", "status after the flood", keep=lambda m: None)
    check(m["id"] == "st", "status: %r" % m)
    await ws.close()

    # A text frame that is not UTF-8 closes with 1007 (websockets will
    # not send one: the frame is written by hand, masked with a zero key).
    ws3 = await connect()
    ws3.transport.write(bytes([0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe]))
    try:
        await asyncio.wait_for(ws3.recv(), 5)
        fail("the server answered an invalid UTF-8 text frame")
    except websockets.ConnectionClosed as e:
        check(e.code == 1007, "invalid UTF-8: close code %s, want 1007" % e.code)

    out["checked"] = checked
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(json.dumps(out))


async def history_frames(c, id):
    frames = []
    while True:
        m = await c.until(lambda m: m["type"] in ("history", "error") and m.get("id") == id, "history " + id, keep=lambda m: None)
        check(m["type"] == "history", "history %s: %r" % (id, m))
        frames.append(m)
        if m["done"]:
            return frames


async def history(c, id):
    return [ev["seq"] for f in await history_frames(c, id) for ev in f["events"] if ev["type"] == "event"]


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--schema", required=True)
    p.add_argument("--doc", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tcp")
    p.add_argument("--token")
    p.add_argument("--unix")
    args = p.parse_args()
    schema = json.load(open(args.schema))
    jsonschema.Draft202012Validator.check_schema(schema)
    for kind in ("client", "server"):
        validators[kind] = jsonschema.Draft202012Validator({**schema, "$ref": "#/$defs/" + kind})
    n = check_doc_examples(args.doc)
    asyncio.run(main())
