// notifyd dashboard: a client of the WebSocket protocol (docs/websocket.md).
// Plain JavaScript, no build step, nothing fetched from anywhere but the
// daemon that served this page.
"use strict";

// ---- Authentication: take the token from the URL once, keep it in
// sessionStorage, and remove it from the address bar before anything else.
const TOKEN_KEY = "notifyd.token";
function takeToken() {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const query = new URLSearchParams(location.search);
  let tok = null;
  if (hash.has("token")) { tok = hash.get("token"); hash.delete("token"); }
  if (query.has("token")) { tok = tok ?? query.get("token"); query.delete("token"); }
  if (tok !== null) {
    try { sessionStorage.setItem(TOKEN_KEY, tok); } catch (_) { /* storage off: keep it in memory */ }
    const q = query.toString(), h = hash.toString();
    history.replaceState(history.state, "", location.pathname + (q ? "?" + q : "") + (h ? "#" + h : ""));
  }
  let stored = null;
  try { stored = sessionStorage.getItem(TOKEN_KEY); } catch (_) { /* ignore */ }
  return stored ?? tok;
}
let token = takeToken();

// ---- Settings from the page URL (never the token): ?filter=…&queue=…&policy=…&rows=…&snapshot=1
const params = new URLSearchParams(location.search);
const settings = {
  queue: Math.max(0, parseInt(params.get("queue") ?? "0", 10) || 0),
  policy: params.get("policy") ?? "",
  snapshot: ["1", "true"].includes(params.get("snapshot") ?? ""),
};

// Protocol paths (api.PathWS, api.PathStatus), absolute on this origin.
const PATH_WS = "/v1/ws";
const PATH_STATUS = "/v1/status";
const STATUS_EVERY_MS = 2000; // status request period
const STATUS_BUSY_MS = 500;    // at most this often while events arrive
const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 5000;
const RATE_KEEP_S = 900; // longest plot window

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "title" || k === "colspan" || k === "scope" || k === "type" || k === "id")
      e.setAttribute(k, v === true ? "" : String(v));
    else e[k] = v;
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
};
const plural = (n, one, many = one + "s") => `${fmtInt(n)} ${n === 1 ? one : many}`;
const fmtInt = (n) => (n === null || n === undefined) ? "–" : Number(n).toLocaleString("en-US");

// ---- State
const state = {
  conn: null,        // the live connection
  pending: null,     // a connection opened to try a new filter
  epoch: "",         // hello.epoch
  lastSeq: 0,        // last seq handed to us (events, loss ranges, bye position)
  countedSeq: 0,     // highest seq counted in rates/losses (replays are not counted twice)
  filter: params.get("filter") ?? "",
  subscription: 0,   // hello.subscription: our id in the subscriber list
  attempts: 0,       // reconnect attempts since the last hello
  everLive: false,
  retryTimer: 0,
  paused: false,
  pausedBuf: [],
  pausedDropped: 0,
  incoming: [],
  flushTimer: 0,
  maxRows: parseInt(params.get("rows") ?? "500", 10) || 500,
  rowCount: 0,
  historyLow: 0,
  losses: new Map(), // origin → {reports, records, unknown, sources:Set, reason}
  rates: new Map(),  // source → Map(second → count)
  statusTimer: 0,
  statusAt: 0,       // when status was last requested
  drawTimer: 0,
};
const rowEvent = new WeakMap();

// ---- Announcements for screen readers
let announceTimer = 0;
function announce(msg) {
  const a = $("announce");
  clearTimeout(announceTimer);
  a.textContent = "";
  announceTimer = setTimeout(() => { a.textContent = msg; }, 50);
}

function setConn(s, text) {
  const c = $("conn");
  c.dataset.state = s;
  $("conn-text").textContent = text;
}

// ---- Connection
function wsURL() {
  const u = new URL(PATH_WS, location.href);
  u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  u.search = "";
  if (token) u.searchParams.set("token", token);
  return u.toString();
}

// open starts a connection and sends subscribe; role is "live" (the
// stream the page shows) or "try" (a new filter being checked while the
// old stream keeps running).
function open(role, filter, since, why) {
  const ws = new WebSocket(wsURL());
  const c = { ws, role, filter, since, why, opened: false, helloed: false, closedByUs: false, statusID: 0 };
  ws.onopen = () => {
    c.opened = true;
    const sub = { type: "subscribe", id: "sub", filter };
    if (since) sub.since = since;
    if (settings.queue) sub.queue = settings.queue;
    if (settings.policy) sub.policy = settings.policy;
    if (settings.snapshot && !since) sub.snapshot = true;
    ws.send(JSON.stringify(sub));
  };
  ws.onmessage = (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch (e) { return; }
    onMessage(c, msg);
  };
  ws.onclose = (e) => onClose(c, e);
  return c;
}

function connect(why) {
  clearTimeout(state.retryTimer);
  const since = state.epoch ? `${state.epoch}:${state.lastSeq}` : "";
  if (why === "reconnect") setConn("reconnecting", `Reconnecting (attempt ${state.attempts})…`);
  else setConn("connecting", "Connecting…");
  state.conn = open("live", state.filter, since, why);
}

function scheduleReconnect(fast) {
  clearTimeout(state.retryTimer);
  state.attempts++;
  const delay = fast ? RECONNECT_MIN_MS
    : Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** Math.min(state.attempts - 1, 5)) * (0.8 + Math.random() * 0.4);
  setConn("reconnecting", `Disconnected; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${state.attempts})`);
  state.retryTimer = setTimeout(async () => {
    // A WebSocket upgrade refused for a bad token looks like any other
    // failure to the browser; ask the status endpoint why.
    if (state.attempts >= 2 && await checkAuth() === false) return;
    connect("reconnect");
  }, delay);
}

// checkAuth reports false (and shows the token form) when the daemon
// refuses our token; true or null (unknown: daemon down) otherwise.
async function checkAuth() {
  try {
    const r = await fetch(PATH_STATUS, { headers: token ? { Authorization: "Bearer " + token } : {}, cache: "no-store" });
    if (r.status === 401 || r.status === 403) {
      let body = {};
      try { body = await r.json(); } catch (_) { /* not JSON */ }
      showAuth(r.status === 401 ? (token ? "The daemon refused this token." : "") : (body.message || "Forbidden."));
      return false;
    }
    if (r.ok) { try { renderStatus(await r.json()); } catch (_) { /* ignore */ } }
    return true;
  } catch (_) {
    return null;
  }
}

function showAuth(msg) {
  clearTimeout(state.retryTimer);
  setConn("unauthorized", "Not connected: token needed");
  $("auth").hidden = false;
  $("auth-error").textContent = msg;
  $("auth-token").focus();
}

function onClose(c, e) {
  if (c.role === "try") {
    if (state.pending === c) state.pending = null;
    if (!c.helloed && !c.errored && !c.closedByUs) {
      showActiveFilter();
      showFilterError(c.filter, { message: `connection closed before the daemon answered (code ${e.code}${e.reason ? ": " + e.reason : ""})` });
    }
    return;
  }
  if (state.conn !== c) return; // replaced by a filter change
  state.conn = null;
  clearInterval(state.statusTimer);
  if (c.closedByUs) return;
  if (c.fatal) return;
  const fast = c.bye === "shutdown" || c.bye === "closed";
  if (c.helloed) announce("Connection to notifyd lost; reconnecting.");
  scheduleReconnect(fast);
}

function onMessage(c, m) {
  switch (m.type) {
    case "hello": return onHello(c, m);
    case "event": case "loss": case "snapshot": return onItems(c, [m]);
    case "batch": return onItems(c, m.events || []);
    case "snapshot-end": return;
    case "status": return renderStatus(m);
    case "error": return onError(c, m);
    case "bye": return onBye(c, m);
    default: return; // forward compatible: ignore unknown messages
  }
}

function onHello(c, h) {
  c.helloed = true;
  if (c.role === "try") {
    // The daemon accepted the new filter: it becomes the live stream.
    const old = state.conn;
    if (old) { old.closedByUs = true; old.ws.close(1000, "filter changed"); }
    c.role = "live";
    state.pending = null;
    state.conn = c;
    state.filter = c.filter;
    clearTable();
    clearFilterError();
    showActiveFilter();
  }
  const epochChanged = state.epoch && state.epoch !== h.epoch;
  state.epoch = h.epoch;
  if (!h.resumed || epochChanged) state.lastSeq = Math.max(h.resumed ? 0 : state.lastSeq, h.seq);
  if (epochChanged) state.countedSeq = 0;
  state.subscription = h.subscription;
  state.attempts = 0;
  state.everLive = true;
  $("auth").hidden = true;
  setConn("live", `Live · epoch ${h.epoch} · protocol ${h.protocol}`);
  $("hub-epoch").textContent = h.epoch;
  if (c.why === "reconnect") {
    const r = $("recovery");
    r.hidden = false;
    if (h.recovered) {
      r.dataset.recovered = "true";
      r.textContent = `Reconnected · recovered: no events missed (resumed after seq ${c.since.split(":")[1]})`;
      announce("Reconnected to notifyd and recovered: no events missed.");
    } else {
      r.dataset.recovered = "false";
      r.textContent = epochChanged
        ? "Reconnected · not recovered: the daemon restarted with a new epoch (see Losses)"
        : "Reconnected · not recovered: some events are gone (see Losses)";
      announce("Reconnected to notifyd, but some events were lost.");
    }
  }
  showActiveFilter();
  requestStatus(c);
  clearInterval(state.statusTimer);
  state.statusTimer = setInterval(() => requestStatus(state.conn), STATUS_EVERY_MS);
}

function requestStatus(c) {
  if (!c || c.ws.readyState !== WebSocket.OPEN) return;
  c.statusID++;
  state.statusAt = Date.now();
  c.ws.send(JSON.stringify({ type: "status", id: "status-" + c.statusID }));
}

function onError(c, m) {
  if (m.code === "bad-filter" || (m.id === "sub" && !c.helloed)) {
    if (c.role === "try") {
      c.errored = true;
      showActiveFilter(); // the running subscription keeps its filter
      showFilterError(c.filter, m);
      c.closedByUs = true;
      c.ws.close(1000, "filter rejected");
      if (state.pending === c) state.pending = null;
      return;
    }
    if (!c.helloed) {
      // The page's initial filter (or a reconnect's) was refused: show it
      // and stay unsubscribed until the user fixes it.
      c.fatal = true;
      showFilterError(c.filter, m);
      setConn("offline", "Not subscribed: the daemon refused the request");
      c.closedByUs = true;
      c.ws.close(1000, "request rejected");
      return;
    }
  }
  if (m.id && m.id.startsWith("status-")) {
    $("subs-note").textContent = `Status not available: ${m.message}`;
    return;
  }
  announce(`notifyd error: ${m.message}`);
  $("subs-note").textContent = `Daemon error (${m.code}): ${m.message}`;
}

function onBye(c, b) {
  c.bye = b.reason;
  if (b.position) {
    const [ep, sq] = b.position.split(":");
    if (ep === state.epoch) state.lastSeq = Math.max(state.lastSeq, Number(sq));
  }
  if (c.role === "live") setConn("reconnecting", `Daemon said bye (${b.reason}): ${b.message || ""}`);
}

// ---- Events
function onItems(c, items) {
  if (c.role !== "live" || state.conn !== c) return;
  for (const ev of items) {
    if (ev.seq > state.lastSeq && ev.type !== "snapshot") state.lastSeq = ev.seq;
    if (ev.loss && ev.loss.to_seq > state.lastSeq) state.lastSeq = ev.loss.to_seq;
    const fresh = ev.type !== "snapshot" && (ev.seq === 0 || ev.seq > state.countedSeq);
    if (fresh) {
      if (ev.seq > state.countedSeq) state.countedSeq = ev.seq;
      if (ev.type === "loss") countLoss(ev);
      else countRate(ev);
    }
    state.incoming.push(ev);
  }
  if (state.incoming.length > state.maxRows) state.incoming.splice(0, state.incoming.length - state.maxRows);
  if (!state.flushTimer) state.flushTimer = setTimeout(flush, 16);
  // Redraw the rates soon rather than at the next tick.
  if (!state.drawTimer) state.drawTimer = setTimeout(() => { state.drawTimer = 0; drawRates(); }, 200);
  // Keep the counters beside the table fresh while events flow.
  if (Date.now() - state.statusAt > STATUS_BUSY_MS) requestStatus(c);
  $("hub-seq").textContent = fmtInt(state.lastSeq);
}

function flush() {
  state.flushTimer = 0;
  const evs = state.incoming;
  state.incoming = [];
  if (!evs.length) return;
  if (state.paused) {
    state.pausedBuf.push(...evs);
    if (state.pausedBuf.length > state.maxRows) {
      state.pausedDropped += state.pausedBuf.length - state.maxRows;
      state.pausedBuf.splice(0, state.pausedBuf.length - state.maxRows);
    }
    updatePauseNote();
    return;
  }
  addRows(evs);
}

function addRows(evs) {
  const tb = $("events");
  const frag = document.createDocumentFragment();
  for (let i = evs.length - 1; i >= 0; i--) frag.append(makeRow(evs[i]));
  tb.prepend(frag);
  state.rowCount += evs.length;
  trimRows();
  updateCount();
}

function trimRows() {
  const tb = $("events");
  while (state.rowCount > state.maxRows && tb.lastElementChild) {
    const last = tb.lastElementChild;
    last.remove();
    if (last.classList.contains("ev")) state.rowCount--;
  }
}

function clearTable() {
  $("events").replaceChildren();
  state.rowCount = 0;
  state.pausedBuf = [];
  state.pausedDropped = 0;
  state.incoming = [];
  updatePauseNote();
  updateCount();
}

function updateCount() {
  $("events-count").textContent = `${state.rowCount} of at most ${state.maxRows} rows shown` +
    (state.filter ? " (filtered by the daemon)" : "");
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function summary(ev) {
  if (ev.loss) {
    const n = ev.loss.count === null || ev.loss.count === undefined ? "unknown number of" : fmtInt(ev.loss.count) + (ev.loss.estimated ? " (estimated)" : "");
    const range = ev.loss.from_seq ? ` · seq ${ev.loss.from_seq}–${ev.loss.to_seq}` : "";
    return `${n} events lost${range}${ev.loss.reason ? " · " + ev.loss.reason : ""}`;
  }
  const parts = [];
  if (ev.block) {
    let s = ev.block.device ? `${ev.block.device} (${ev.block.dev})` : ev.block.dev;
    if (ev.block.sector !== undefined) s += ` sector ${ev.block.sector}`;
    parts.push(s);
  }
  if (ev.key) {
    let s = `key ${ev.key.id}`;
    if (ev.key.aux) s += ` aux ${ev.key.aux}`;
    if (ev.key.type) s += ` ${ev.key.type}`;
    if (ev.key.description) s += ` "${ev.key.description}"`;
    parts.push(s);
  }
  if (ev.usb) {
    let s = ev.usb.name;
    if (ev.usb.vendor) s += ` ${ev.usb.vendor}:${ev.usb.product}`;
    if (ev.usb.speed) s += ` ${ev.usb.speed}`;
    if (ev.usb.error) s += ` error ${ev.usb.error}`;
    parts.push(s);
  }
  if (!parts.length && ev.props && ev.props.MESSAGE) parts.push(ev.props.MESSAGE);
  if (!parts.length && ev.object) parts.push(ev.object);
  return parts.join(" · ");
}

function makeRow(ev) {
  const cls = ["ev"];
  if (ev.type === "loss") cls.push("loss");
  if (ev.type === "snapshot") cls.push("snapshot");
  const btn = el("button", { type: "button", class: "rowbtn", "aria-expanded": "false", title: ev.time || "" }, fmtTime(ev.time));
  btn.addEventListener("click", toggleDetails);
  const dev = ev.block ? ev.block.device || ev.block.dev : ev.usb ? ev.usb.name : ev.key ? String(ev.key.id) : "";
  const tr = el("tr", { class: cls.join(" "), "data-seq": ev.seq, "data-source": ev.source, "data-subtype": ev.subtype, "data-device": dev, "data-origin": ev.origin },
    el("td", { class: "c-time" }, btn),
    el("td", { class: "c-seq" }, ev.seq ? String(ev.seq) : "–"),
    el("td", {}, el("span", { class: "src", text: ev.source || (ev.type === "loss" ? "all" : "") })),
    el("td", {}, ev.type === "snapshot" ? `${ev.subtype} (snapshot)` : (ev.subtype || "")),
    el("td", { class: "c-dev" }, summary(ev)),
    el("td", { class: "c-origin" }, ev.origin || ""));
  tr.querySelector(".src").style.color = colorFor(ev.source);
  rowEvent.set(tr, ev);
  return tr;
}

function toggleDetails(e) {
  const btn = e.currentTarget;
  const tr = btn.closest("tr");
  const open = btn.getAttribute("aria-expanded") === "true";
  if (open) {
    if (tr.nextElementSibling && tr.nextElementSibling.classList.contains("details")) tr.nextElementSibling.remove();
    btn.setAttribute("aria-expanded", "false");
    return;
  }
  const ev = rowEvent.get(tr);
  const id = `details-${ev.seq}-${Math.random().toString(36).slice(2, 8)}`;
  const row = el("tr", { class: "details", id }, el("td", { colspan: 6 }, details(ev)));
  tr.after(row);
  btn.setAttribute("aria-expanded", "true");
  btn.setAttribute("aria-controls", id);
}

function details(ev) {
  const dl = el("dl", { class: "fields" });
  const add = (k, v) => { if (v !== undefined && v !== null && v !== "") dl.append(el("div", {}, el("dt", {}, k), el("dd", {}, String(v)))); };
  add("type", ev.type);
  add("seq", ev.seq);
  add("epoch", ev.epoch);
  add("time", ev.time);
  add("source", ev.source);
  add("subtype", ev.subtype);
  add("origin", ev.origin);
  add("tag", ev.tag);
  add("object", ev.object);
  if (ev.removed) add("removed", "yes");
  for (const [group, obj] of [["key", ev.key], ["block", ev.block], ["usb", ev.usb], ["loss", ev.loss]]) {
    if (!obj) continue;
    for (const [k, v] of Object.entries(obj)) add(`${group}.${k}`, v === null ? "unknown" : v);
  }
  if (ev.props) for (const k of Object.keys(ev.props).sort()) add(k, ev.props[k]);
  const box = el("div", {}, dl);
  if (ev.raw) {
    box.append(el("p", { class: "help" }, `Raw record (${ev.raw.length / 2} bytes, notifyd record ABI):`),
      el("pre", { class: "hexdump", "aria-label": "raw record bytes in hexadecimal" }, hexdump(ev.raw)));
  } else {
    box.append(el("p", { class: "help" }, "No raw record bytes."));
  }
  return box;
}

// hexdump renders hex text as "offset  16 bytes  ascii" lines.
function hexdump(hex) {
  const bytes = [];
  for (let i = 0; i + 1 < hex.length; i += 2) bytes.push(parseInt(hex.slice(i, i + 2), 16));
  const lines = [];
  for (let off = 0; off < bytes.length; off += 16) {
    const chunk = bytes.slice(off, off + 16);
    let h = "";
    for (let i = 0; i < 16; i++) {
      h += i < chunk.length ? chunk[i].toString(16).padStart(2, "0") + " " : "   ";
      if (i === 7) h += " ";
    }
    const a = chunk.map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${off.toString(16).padStart(4, "0")}  ${h} ${a}`);
  }
  return lines.join("\n");
}

// ---- Pause
function setPaused(p) {
  state.paused = p;
  const b = $("pause");
  b.setAttribute("aria-pressed", String(p));
  b.textContent = p ? "Resume" : "Pause";
  if (!p) {
    const buf = state.pausedBuf;
    state.pausedBuf = [];
    state.pausedDropped = 0;
    if (buf.length) addRows(buf);
  }
  updatePauseNote();
}

function updatePauseNote() {
  const n = $("pause-note");
  if (!state.paused) { n.hidden = true; n.textContent = ""; return; }
  n.hidden = false;
  n.textContent = `Paused: ${plural(state.pausedBuf.length + state.pausedDropped, "new event")} held` +
    (state.pausedDropped ? ` (only the newest ${state.pausedBuf.length} will be shown)` : "") +
    ". Counters and rates keep updating.";
}

// ---- Filter
function showActiveFilter() {
  $("filter-active").textContent = state.filter ? `Showing: ${state.filter}` : "Showing every event.";
  updateCount();
}

// byteToIndex converts the daemon's byte offset in the UTF-8 filter text
// to a JavaScript string index.
function byteToIndex(s, pos) {
  const enc = new TextEncoder();
  let bytes = 0, i = 0;
  for (const ch of s) {
    if (bytes >= pos) break;
    bytes += enc.encode(ch).length;
    i += ch.length;
  }
  return i;
}

function showFilterError(text, m) {
  const box = $("filter-error");
  const input = $("filter");
  box.replaceChildren();
  const head = el("p", { class: "error-head" }, el("strong", {}, "Filter rejected"));
  if (typeof m.pos === "number") head.append(` at position ${m.pos}`);
  head.append(": ", m.message || "unknown error");
  box.append(head);
  if (typeof m.pos === "number") {
    const i = Math.min(byteToIndex(text, m.pos), text.length);
    const mark = el("mark", {}, i < text.length ? text.slice(i, i + 1) : " ");
    box.append(el("pre", { "aria-hidden": "true" }, text.slice(0, i), mark, text.slice(i + 1)));
    try { input.setSelectionRange(i, Math.min(i + 1, text.length)); } catch (_) { /* ignore */ }
  }
  box.hidden = false;
  box.dataset.pos = typeof m.pos === "number" ? m.pos : "";
  input.setAttribute("aria-invalid", "true");
}

function clearFilterError() {
  const box = $("filter-error");
  box.hidden = true;
  box.replaceChildren();
  $("filter").removeAttribute("aria-invalid");
}

function applyFilter(text) {
  text = text.trim();
  clearFilterError();
  if (state.pending) { state.pending.closedByUs = true; state.pending.ws.close(1000, "superseded"); state.pending = null; }
  // Replay the recent past through the new filter: from the oldest row
  // shown (but not before what history still holds), so the table
  // narrows at once; live events follow without a gap.
  let since = "";
  if (state.epoch) {
    const rows = $("events").querySelectorAll("tr.ev");
    let from = state.lastSeq;
    for (const r of rows) { const s = Number(r.dataset.seq); if (s > 0 && s - 1 < from) from = s - 1; }
    if (state.historyLow > 0) from = Math.max(from, state.historyLow - 1);
    since = `${state.epoch}:${from}`;
  }
  if (!state.conn) {
    // Not connected: the filter applies to the next connection.
    state.filter = text;
    clearTable();
    showActiveFilter();
    clearTimeout(state.retryTimer);
    connect(state.everLive ? "reconnect" : "start");
    return;
  }
  state.pending = open("try", text, since, "filter");
  $("filter-active").textContent = `Checking filter…`;
}

// ---- Losses
function countLoss(ev) {
  const o = ev.loss && ev.origin ? ev.origin : "unknown";
  let l = state.losses.get(o);
  if (!l) { l = { reports: 0, records: 0, unknown: 0, sources: new Set(), reason: "" }; state.losses.set(o, l); }
  l.reports++;
  if (ev.loss.count === null || ev.loss.count === undefined) l.unknown++;
  else l.records += ev.loss.count;
  l.sources.add(ev.source || "all sources");
  l.reason = ev.loss.reason || l.reason;
  renderLosses();
  announce(`Loss reported by ${o}: ${summary(ev)}`);
}

const ORIGIN_TEXT = {
  subscriber: "this page's queue in the daemon overflowed",
  history: "resume point no longer in the daemon's history",
  watch_queue: "kernel notification queue overflowed",
  uevent: "netlink uevent socket overflowed (ENOBUFS)",
  kmsg: "kernel log overwritten before it was read",
  notifyd: "the daemon",
};

function renderLosses() {
  const ul = $("losses");
  ul.replaceChildren();
  let total = 0, unknown = 0;
  const origins = [...state.losses.keys()].sort();
  for (const o of origins) {
    const l = state.losses.get(o);
    total += l.records;
    unknown += l.unknown;
    ul.append(el("li", { class: "loss-card", "data-origin": o, "data-nonzero": "true", "data-lost": l.records, "data-unknown": l.unknown },
      el("div", {}, el("span", { class: "n" }, fmtInt(l.records)), l.unknown ? ` + ${l.unknown} of unknown size` : "", " lost"),
      el("div", {}, el("strong", {}, o), ` — ${ORIGIN_TEXT[o] || "lost upstream"}`),
      el("div", { class: "why" }, `${fmtInt(l.reports)} loss report${l.reports === 1 ? "" : "s"}; sources: ${[...l.sources].join(", ")}`),
      l.reason ? el("div", { class: "why" }, `last: ${l.reason}`) : null));
  }
  if (!origins.length) ul.append(el("li", { class: "loss-card", "data-nonzero": "false" }, "No losses: every event this page was owed arrived."));
  const badge = $("loss-total");
  const nonzero = total > 0 || unknown > 0;
  badge.dataset.nonzero = String(nonzero);
  badge.textContent = fmtInt(total) + (unknown ? "+?" : "");
  badge.setAttribute("aria-label", nonzero ? `${total} events lost${unknown ? " plus losses of unknown size" : ""}` : "no losses");
}

// ---- Rates
const SERIES = { key: 1, block: 2, usb: 3, meta: 4 };
let nextSeries = 5;
function colorFor(src) {
  if (!src) return "var(--muted)";
  if (!SERIES[src]) SERIES[src] = nextSeries <= 6 ? nextSeries++ : 6;
  return `var(--series-${SERIES[src]})`;
}
function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
function resolveColor(src) { colorFor(src); return cssVar(`--series-${SERIES[src] || 6}`); }

function countRate(ev) {
  const src = ev.source || "?";
  let t = Date.parse(ev.time);
  if (isNaN(t)) t = Date.now();
  const sec = Math.floor(t / 1000);
  if (sec < Date.now() / 1000 - RATE_KEEP_S) return;
  let m = state.rates.get(src);
  if (!m) { m = new Map(); state.rates.set(src, m); }
  m.set(sec, (m.get(sec) || 0) + 1);
}

function drawRates() {
  const canvas = $("rates");
  const windowS = parseInt($("window").value, 10);
  const now = Math.floor(Date.now() / 1000);
  const bins = 60, binS = windowS / bins;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const series = [];
  let maxRate = 0;
  for (const [src, m] of state.rates) {
    for (const s of m.keys()) if (s < now - RATE_KEEP_S) m.delete(s);
    const vals = new Array(bins).fill(0);
    for (const [s, n] of m) {
      const age = now - s; // 0 = this second
      if (age < 0 || age >= windowS) continue;
      const b = bins - 1 - Math.floor(age / binS);
      vals[b] += n;
    }
    for (let i = 0; i < bins; i++) { vals[i] /= binS; maxRate = Math.max(maxRate, vals[i]); }
    let recent = 0;
    for (const [s, n] of m) if (now - s < 10) recent += n;
    series.push({ src, vals, recent: recent / 10 });
  }
  const top = niceCeil(maxRate);
  const padL = 40, padR = 8, padT = 8, padB = 18;
  const pw = w - padL - padR, ph = h - padT - padB;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = cssVar("--muted");
  ctx.strokeStyle = cssVar("--grid");
  ctx.lineWidth = 1;
  for (let i = 0; i <= 2; i++) {
    const y = padT + ph - (ph * i) / 2;
    ctx.beginPath(); ctx.moveTo(padL, y + 0.5); ctx.lineTo(padL + pw, y + 0.5); ctx.stroke();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText(fmtRate((top * i) / 2), padL - 4, y);
  }
  ctx.textAlign = "left"; ctx.textBaseline = "top";
  ctx.fillText(`−${windowS >= 120 ? windowS / 60 + " min" : windowS + " s"}`, padL, padT + ph + 4);
  ctx.textAlign = "right";
  ctx.fillText("now (events/s)", padL + pw, padT + ph + 4);
  ctx.lineWidth = 2;
  for (const s of series) {
    ctx.strokeStyle = resolveColor(s.src);
    ctx.beginPath();
    s.vals.forEach((v, i) => {
      const x = padL + (pw * (i + 0.5)) / bins;
      const y = padT + ph - (top ? (ph * v) / top : 0);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  const legend = $("rates-legend");
  legend.replaceChildren(...series.map((s) => el("li", { "data-source": s.src },
    el("span", { class: "sw" }), `${s.src} ${fmtRate(s.recent)}/s`)));
  legend.querySelectorAll(".sw").forEach((sw, i) => { sw.style.background = colorFor(series[i].src); });
  if (!series.length) legend.append(el("li", {}, "No events yet."));
  canvas.setAttribute("aria-label", `Events per second per source over the last ${windowS / 60} minutes` +
    (series.length ? ": " + series.map((s) => `${s.src} ${fmtRate(s.recent)} per second now`).join(", ") : ": no events yet"));
}

function niceCeil(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
function fmtRate(v) { return v >= 100 ? Math.round(v).toString() : v >= 10 ? v.toFixed(1) : v.toFixed(2).replace(/\.?0+$/, "") || "0"; }

// ---- Status: sources, subscribers, hub counters
function renderStatus(s) {
  if (!s) return;
  if (s.hub) {
    $("hub-epoch").textContent = s.hub.epoch || state.epoch || "–";
    $("hub-seq").textContent = fmtInt(s.hub.seq);
    $("hub-published").textContent = fmtInt(s.hub.published);
    $("hub-deliveries").textContent = fmtInt(s.hub.deliveries);
    $("hub-drops").textContent = fmtInt(s.hub.drops);
    $("hub-denials").textContent = fmtInt(s.hub.denials);
    state.historyLow = s.hub.history_low || 0;
  }
  const src = $("sources");
  src.replaceChildren(...(s.sources || []).map((h) => {
    const why = [h.reason, h.errno].filter(Boolean).join(" · ");
    const origins = (h.origins || []).join(" + ");
    return el("li", { class: "source", "data-name": h.name, "data-state": h.state },
      el("div", { class: "source-head" },
        el("strong", {}, h.name),
        el("span", { class: `state state-${h.state}` }, h.state),
        el("span", { class: "counts" }, `${plural(h.events, "event")} · ${plural(h.losses, "loss", "losses")}`)),
      el("div", { class: "reason" }, [h.source && h.source !== h.name ? `feeds ${h.source}` : "", origins ? `from ${origins}` : ""].filter(Boolean).join(", ")),
      why ? el("div", { class: "reason" }, why) : null);
  }));
  if (!(s.sources || []).length) src.append(el("li", {}, "No sources reported."));
  const subs = $("subs");
  subs.replaceChildren(...(s.subscribers || []).map((u) => {
    const mine = u.id === state.subscription && state.conn;
    const meter = el("meter", { min: 0, max: u.queue_len || 1, value: u.queued, high: (u.queue_len || 1) * 0.75, optimum: 0,
      title: `${u.queued} of ${u.queue_len}` });
    meter.setAttribute("aria-label", `queue ${u.queued} of ${u.queue_len}`);
    return el("tr", { "data-id": u.id, class: mine ? "mine" : "" },
      el("td", {}, `#${u.id} ${u.label || ""}`, mine ? " (this page)" : "",
        el("span", { class: "reason" }, `uid ${u.uid} · ${u.policy}`)),
      el("td", {}, meter, ` ${u.queued}/${u.queue_len}`),
      el("td", { class: "n" }, fmtInt(u.delivered)),
      el("td", { class: "n" }, fmtInt(u.lost)));
  }));
  if (s.subscribers) $("subs-note").textContent = `${s.subscribers.length} subscription${s.subscribers.length === 1 ? "" : "s"}.`;
}

// ---- Wiring
function init() {
  $("pause").addEventListener("click", () => setPaused(!state.paused));
  $("clear").addEventListener("click", () => clearTable());
  const rows = $("rows");
  if (![...rows.options].some((o) => o.value === String(state.maxRows))) rows.append(el("option", { value: state.maxRows }, String(state.maxRows)));
  rows.value = String(state.maxRows);
  rows.addEventListener("change", () => { state.maxRows = parseInt(rows.value, 10); trimRows(); updateCount(); });
  $("window").addEventListener("change", drawRates);
  $("filter").value = state.filter;
  $("filter-form").addEventListener("submit", (e) => { e.preventDefault(); applyFilter($("filter").value); });
  $("filter-reset").addEventListener("click", () => { $("filter").value = ""; applyFilter(""); });
  $("filter").addEventListener("input", () => { if ($("filter").getAttribute("aria-invalid")) $("filter").removeAttribute("aria-invalid"); });
  $("auth").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("auth-token").value.trim();
    $("auth-token").value = "";
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (_) { /* ignore */ }
    $("auth").hidden = true;
    state.attempts = 0;
    connect(state.everLive ? "reconnect" : "start");
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", drawRates);
  window.addEventListener("resize", drawRates);
  renderLosses();
  showActiveFilter();
  drawRates();
  setInterval(drawRates, 1000);
  connect("start");
}

init();
