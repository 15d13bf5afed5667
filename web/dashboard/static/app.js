// notifyd dashboard: a client of the WebSocket protocol 1.1
// (docs/websocket.md). Plain JavaScript, no build step, nothing fetched
// from anywhere but the daemon that served this page.
//
// One connection carries every pane: each pane is one named subscription
// (subscribe/update/unsubscribe), opens with the recent history (history
// before the subscription's start) and pages further back (history
// before the oldest row) when its table is scrolled to the end.
"use strict";

// ---- Authentication. Two ways in:
//  * a browser session: `notifyctl dashboard` opens this page with a
//    one-time login code in the fragment (#login=…); the page POSTs it to
//    the daemon, which sets an HttpOnly session cookie bound to that
//    user; every request then carries the cookie by itself;
//  * the administrator's token (#token=… or ?token=…, or the form), kept
//    in sessionStorage and sent as ?token= / Authorization: Bearer.
// Both are taken from the URL at once and removed from the address bar.
const TOKEN_KEY = "notifyd.token";
function takeSecrets() {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const query = new URLSearchParams(location.search);
  let tok = null, code = null;
  if (hash.has("token")) { tok = hash.get("token"); hash.delete("token"); }
  if (query.has("token")) { tok = tok ?? query.get("token"); query.delete("token"); }
  if (hash.has("login")) { code = hash.get("login"); hash.delete("login"); }
  if (tok !== null || code !== null) {
    const q = query.toString(), h = hash.toString();
    history.replaceState(history.state, "", location.pathname + (q ? "?" + q : "") + (h ? "#" + h : ""));
  }
  if (tok !== null) {
    try { sessionStorage.setItem(TOKEN_KEY, tok); } catch (_) { /* storage off: keep it in memory */ }
  }
  let stored = null;
  try { stored = sessionStorage.getItem(TOKEN_KEY); } catch (_) { /* ignore */ }
  return { token: stored ?? tok, code };
}
const secrets = takeSecrets();
let token = secrets.token;

// ---- Settings from the page URL (never a secret):
// ?filter=…&pane=…&pane=…&queue=…&policy=…&rows=…&snapshot=1
const params = new URLSearchParams(location.search);
const settings = {
  queue: Math.max(0, parseInt(params.get("queue") ?? "0", 10) || 0),
  policy: params.get("policy") ?? "",
  snapshot: ["1", "true"].includes(params.get("snapshot") ?? ""),
};

// Protocol paths (api.PathWS, api.PathStatus, api.PathSession,
// api.PathSessionLogout), absolute on this origin.
const PATH_WS = "/v1/ws";
const PATH_STATUS = "/v1/status";
const PATH_SESSION = "/v1/session";
const PATH_SESSION_LOGOUT = "/v1/session/logout";
const STATUS_EVERY_MS = 2000; // status request period
const STATUS_BUSY_MS = 500;    // at most this often while events arrive
const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 5000;
const RATE_KEEP_S = 900;       // longest plot window
const OPEN_HISTORY = 5000;     // events a pane asks for when it opens (rates; the table keeps `rows`)
const PAGE_ROWS = 200;         // events one scroll-back page asks for
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
  epoch: "",         // the session hello's epoch
  session: null,     // the session hello: uid, user, auth, limits
  sessionInfo: null, // GET /v1/session: the browser session's expiry
  panes: [],         // in display order
  nextPane: 1,
  reqs: new Map(),   // id → pending history answer {pane, kind, events}
  nextReq: 1,
  attempts: 0,       // reconnect attempts since the last session hello
  everLive: false,
  signedOut: false,
  retryTimer: 0,
  paused: false,
  maxRows: parseInt(params.get("rows") ?? "500", 10) || 500,
  losses: new Map(), // origin → {reports, records, unknown, sources:Set, reason}
  rates: new Map(),  // source → Map(second → count)
  counted: new Map(),// seq → second: hub events counted once, whichever pane brought them
  resume: null,      // after a reconnect: {waiting:Set, recovered, since}
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

function send(c, msg) {
  if (!c || c.ws.readyState !== WebSocket.OPEN) return false;
  c.ws.send(JSON.stringify(msg));
  return true;
}

// connect opens the one connection and speaks protocol 1.1: a hello
// first, then one subscribe per pane once the session hello is in.
function connect(why) {
  clearTimeout(state.retryTimer);
  if (why === "reconnect") setConn("reconnecting", `Reconnecting (attempt ${state.attempts})…`);
  else setConn("connecting", "Connecting…");
  const ws = new WebSocket(wsURL());
  const c = { ws, why, helloed: false, closedByUs: false, statusID: 0, prevEpoch: state.epoch };
  ws.onopen = () => send(c, { type: "hello", protocol: 1, minor: 1, id: "h" });
  ws.onmessage = (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch (e) { return; }
    onMessage(c, msg);
  };
  ws.onclose = (e) => onClose(c, e);
  state.conn = c;
}

function scheduleReconnect(fast) {
  clearTimeout(state.retryTimer);
  state.attempts++;
  const delay = fast ? RECONNECT_MIN_MS
    : Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** Math.min(state.attempts - 1, 5)) * (0.8 + Math.random() * 0.4);
  setConn("reconnecting", `Disconnected; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${state.attempts})`);
  state.retryTimer = setTimeout(async () => {
    // A WebSocket upgrade refused (no session, a wrong token) looks like
    // any other failure to the browser; ask the status endpoint why.
    if (state.attempts >= 2 && await checkAuth() === false) return;
    connect("reconnect");
  }, delay);
}

// checkAuth reports false (and shows the sign-in form) when the daemon
// refuses our token or session; true or null (unknown: daemon down)
// otherwise.
async function checkAuth() {
  try {
    const r = await fetch(PATH_STATUS, { headers: token ? { Authorization: "Bearer " + token } : {}, cache: "no-store", credentials: "same-origin" });
    if (r.status === 401 || r.status === 403) {
      let body = {};
      try { body = await r.json(); } catch (_) { /* not JSON */ }
      showAuth(r.status === 401 ? (token ? "The daemon refused this token." : (body.message || "")) : (body.message || "Forbidden."));
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
  setConn("unauthorized", state.signedOut ? "Signed out" : "Not connected: not signed in");
  $("auth").hidden = false;
  $("auth-error").textContent = msg;
  $("auth-token").focus();
  showWho(null);
}

// exchange trades the one-time login code for the session cookie: a
// same-origin POST (the daemon refuses it from anywhere else).
async function exchange(code) {
  setConn("connecting", "Signing in…");
  try {
    const r = await fetch(PATH_SESSION, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }),
      credentials: "same-origin", cache: "no-store",
    });
    let body = {};
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) {
      showAuth(`This login link did not work: ${body.message || r.status}`);
      return false;
    }
    // The session replaces any token this tab held.
    token = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* ignore */ }
    state.sessionInfo = body;
    return true;
  } catch (e) {
    showAuth(`Could not reach the daemon to sign in: ${e.message || e}`);
    return false;
  }
}

async function signOut() {
  try {
    await fetch(PATH_SESSION_LOGOUT, { method: "POST", credentials: "same-origin", cache: "no-store" });
  } catch (_) { /* the daemon is gone: nothing to end */ }
  state.signedOut = true;
  const c = state.conn;
  if (c) { c.closedByUs = true; c.ws.close(1000, "signed out"); }
  state.conn = null;
  clearInterval(state.statusTimer);
  showAuth("Signed out. Run notifyctl dashboard to sign in again.");
  announce("Signed out.");
}

function onClose(c, e) {
  if (state.conn !== c) return;
  state.conn = null;
  clearInterval(state.statusTimer);
  for (const p of state.panes) {
    p.subscribed = p.subscribing = false;
    if (p.queuedFilter !== null) {
      // A filter that was waiting for the subscribe: the next connection
      // subscribes with it, afresh.
      p.filter = p.queuedFilter;
      p.queuedFilter = null;
      p.everSubscribed = false;
      clearPane(p);
      showActiveFilter(p);
    }
  }
  state.reqs.clear();
  if (c.closedByUs || state.signedOut) return;
  const fast = c.bye === "shutdown" || c.bye === "closed";
  if (c.helloed) announce("Connection to notifyd lost; reconnecting.");
  scheduleReconnect(fast);
}

function onMessage(c, m) {
  if (state.conn !== c) return;
  switch (m.type) {
    case "hello": return onSession(c, m);
    case "subscribed": return onSubscribed(c, m);
    case "batch": return onItems(c, paneOf(m.sub), m.events || []);
    case "event": case "loss": case "snapshot": return onItems(c, state.panes[0], [m]);
    case "snapshot-end": return;
    case "updated": return onUpdated(c, m);
    case "unsubscribed": return onUnsubscribed(c, m);
    case "history": return onHistory(c, m);
    case "status": return renderStatus(m);
    case "error": return onError(c, m);
    case "bye": return onBye(c, m);
    default: return; // forward compatible: ignore unknown messages
  }
}

// onSession: the answer to our hello says whose session this is; then
// every pane subscribes (resuming after its last seq on a reconnect).
function onSession(c, h) {
  c.helloed = true;
  const prev = c.prevEpoch;
  const epochChanged = prev && prev !== h.epoch;
  state.epoch = h.epoch;
  state.session = h;
  if (epochChanged) state.counted.clear();
  state.attempts = 0;
  state.everLive = true;
  $("auth").hidden = true;
  setConn("live", `Live · epoch ${h.epoch} · protocol ${h.protocol}.${h.minor}`);
  $("hub-epoch").textContent = h.epoch;
  showWho(h);
  if (h.auth === "session" && !state.sessionInfo) fetchSessionInfo();
  state.resume = c.why === "reconnect" ? { waiting: new Set(), recovered: true, epochChanged, since: 0 } : null;
  for (const p of state.panes) subscribePane(c, p, prev);
  requestStatus(c);
  clearInterval(state.statusTimer);
  state.statusTimer = setInterval(() => requestStatus(state.conn), STATUS_EVERY_MS);
}

async function fetchSessionInfo() {
  try {
    const r = await fetch(PATH_SESSION, { credentials: "same-origin", cache: "no-store" });
    if (r.ok) { state.sessionInfo = await r.json(); showWho(state.session); }
  } catch (_) { /* ignore */ }
}

// showWho says whose session this is (the session hello's uid and user).
function showWho(h) {
  const w = $("whoami");
  if (!h) { w.hidden = true; $("signout").hidden = true; return; }
  const who = `${h.user || "uid " + h.uid} (uid ${h.uid})`;
  let text;
  switch (h.auth) {
    case "session": {
      text = `Signed in as ${who}`;
      const exp = state.sessionInfo && state.sessionInfo.expires ? new Date(state.sessionInfo.expires) : null;
      if (exp && !isNaN(exp)) text += ` · until ${exp.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
      break;
    }
    case "token": text = `Admin token · events as ${who}`; break;
    default: text = `Events as ${who}`;
  }
  $("whoami-text").textContent = text;
  w.dataset.auth = h.auth || "";
  w.dataset.uid = String(h.uid ?? "");
  w.dataset.user = h.user || "";
  w.hidden = false;
  $("signout").hidden = h.auth !== "session";
}

function requestStatus(c) {
  if (!c || !c.helloed || c.ws.readyState !== WebSocket.OPEN) return;
  c.statusID++;
  state.statusAt = Date.now();
  send(c, { type: "status", id: "status-" + c.statusID });
}

function onBye(c, b) {
  c.bye = b.reason;
  setConn("reconnecting", `Daemon said bye (${b.reason}): ${b.message || ""}`);
}

// ---- Panes. Each pane is one named subscription ("p1", "p2", …) on the
// connection, with its own filter and table. The first pane keeps the
// element ids of the one-table page (events, filter, …); pane N adds -N.
function paneOf(sub) { return state.panes.find((p) => p.sub === sub) || null; }

function addPane(filter, focus) {
  const n = state.nextPane++;
  const sfx = state.panes.length === 0 ? "" : `-${n}`;
  const frag = $("pane-tpl").content.cloneNode(true);
  const section = frag.querySelector("section");
  const p = {
    n, sub: `p${n}`, filter, pendingFilter: null, section, els: {},
    subscribed: false, subscribing: false, queuedFilter: null, everSubscribed: false, subscription: 0, lastSeq: 0,
    rowCount: 0, extra: 0, incoming: [], pausedBuf: [], pausedDropped: 0, flushTimer: 0,
    paging: false, more: true, fills: 0,
  };
  for (const e of section.querySelectorAll("[data-id]")) { p.els[e.dataset.id] = e; e.id = e.dataset.id + sfx; }
  for (const e of section.querySelectorAll("[data-for]")) e.htmlFor = e.dataset.for + sfx;
  for (const e of section.querySelectorAll("[data-describedby]")) e.setAttribute("aria-describedby", e.dataset.describedby.split(" ").map((x) => x + sfx).join(" "));
  section.dataset.pane = String(n);
  section.dataset.sub = p.sub;
  section.setAttribute("aria-labelledby", p.els["pane-title"].id);
  p.els["pane-title"].textContent = `Pane ${n}`;
  p.els["events-wrap"].setAttribute("aria-label", `Events of pane ${n}`);
  p.els["pane-remove"].hidden = state.panes.length === 0; // the first pane stays
  p.els["filter"].value = filter;
  p.els["filter-form"].addEventListener("submit", (e) => { e.preventDefault(); applyFilter(p, p.els["filter"].value); });
  p.els["filter-reset"].addEventListener("click", () => { p.els["filter"].value = ""; applyFilter(p, ""); });
  p.els["filter"].addEventListener("input", () => { if (p.els["filter"].getAttribute("aria-invalid")) p.els["filter"].removeAttribute("aria-invalid"); });
  p.els["pane-remove"].addEventListener("click", () => removePane(p));
  p.els["older"].addEventListener("click", () => loadOlder(p));
  p.els["events-wrap"].addEventListener("scroll", () => {
    const w = p.els["events-wrap"];
    if (w.scrollTop > 0 && w.scrollTop + w.clientHeight >= w.scrollHeight - 40) loadOlder(p);
  }, { passive: true });
  state.panes.push(p);
  $("panes").append(section);
  showActiveFilter(p);
  if (state.conn && state.conn.helloed) subscribePane(state.conn, p, state.epoch);
  if (focus) p.els["filter"].focus();
  return p;
}

function removePane(p) {
  if (state.panes.length <= 1 || !state.panes.includes(p)) return;
  send(state.conn, { type: "unsubscribe", sub: p.sub, id: `unsub-${p.n}` });
  clearTimeout(p.flushTimer);
  state.panes.splice(state.panes.indexOf(p), 1);
  for (const [id, r] of state.reqs) if (r.pane === p) state.reqs.delete(id);
  p.section.remove();
  updatePauseNote();
  announce(`Pane ${p.n} removed.`);
  $("add-pane").focus();
}

// subscribePane subscribes p on c: after a reconnect it resumes after the
// pane's last seq (of epoch prev); otherwise it starts live and the
// recent history fills the table (onSubscribed).
function subscribePane(c, p, prev) {
  const m = { type: "subscribe", sub: p.sub, id: `sub-${p.n}`, filter: p.filter };
  if (p.everSubscribed && prev) {
    m.since = `${prev}:${p.lastSeq}`;
    if (state.resume) state.resume.waiting.add(p.sub);
  } else if (settings.snapshot) {
    m.snapshot = true;
  }
  if (settings.queue) m.queue = settings.queue;
  if (settings.policy) m.policy = settings.policy;
  p.resuming = !!m.since;
  p.subscribing = send(c, m);
}

function onSubscribed(c, h) {
  const p = paneOf(h.sub);
  if (!p) return;
  p.subscribed = true;
  p.subscribing = false;
  p.subscription = h.subscription;
  if (p.queuedFilter !== null) {
    // A filter applied while the subscribe was on its way: now an update.
    const text = p.queuedFilter;
    p.queuedFilter = null;
    p.everSubscribed = true;
    p.lastSeq = h.resumed ? p.lastSeq : h.seq;
    p.pendingFilter = text;
    send(c, { type: "update", sub: p.sub, id: `upd-${p.n}-${state.nextReq++}`, filter: text });
    return;
  }
  if (h.id === `sub-${p.n}` && p.pendingFilter !== null) {
    // A filter applied while the pane was not subscribed took effect.
    p.filter = p.pendingFilter;
    p.pendingFilter = null;
    clearFilterError(p);
  }
  showActiveFilter(p);
  if (p.resuming && h.resumed) {
    const r = state.resume;
    if (r && r.waiting.delete(p.sub)) {
      r.recovered = r.recovered && h.recovered;
      r.since = r.since || p.lastSeq;
      if (r.waiting.size === 0) showRecovery(r);
    }
    p.everSubscribed = true;
    return;
  }
  p.everSubscribed = true;
  p.lastSeq = h.seq;
  // Open with the recent past: the newest events up to where the live
  // stream starts, so nothing is shown twice and nothing is missing.
  fill(c, p, h.seq);
}

// fill asks for the newest events of p's filter up to seq (inclusive):
// they go below whatever the live stream has added since.
function fill(c, p, seq) {
  const id = `fill-${p.n}-${state.nextReq++}`;
  const limit = Math.min(Math.max(state.maxRows, OPEN_HISTORY), (state.session && state.session.limits.history_page) || OPEN_HISTORY);
  state.reqs.set(id, { pane: p, kind: "fill", events: [] });
  p.more = true;
  send(c, { type: "history", id, filter: p.filter, before: seq + 1, limit });
}

// loadOlder pages back: the events before the oldest row of p's table.
function loadOlder(p) {
  const c = state.conn;
  if (!c || !c.helloed || p.paging || !p.subscribed) return;
  if (!p.more) { p.els["older-note"].textContent = "No older events in the daemon's history."; return; }
  let before = p.lastSeq + 1;
  const rows = p.els["events"].querySelectorAll("tr.ev");
  for (let i = rows.length - 1; i >= 0; i--) {
    const s = Number(rows[i].dataset.seq);
    if (s > 0) { before = s; break; }
  }
  if (before <= 1) { p.more = false; p.els["older-note"].textContent = "No older events in the daemon's history."; return; }
  const id = `page-${p.n}-${state.nextReq++}`;
  state.reqs.set(id, { pane: p, kind: "page", events: [] });
  p.paging = true;
  p.els["older"].disabled = true;
  p.els["older-note"].textContent = "Loading older events…";
  send(c, { type: "history", id, filter: p.filter, before, limit: PAGE_ROWS });
}

function onHistory(c, m) {
  const r = state.reqs.get(m.id);
  if (!r) return;
  r.events.push(...(m.events || []));
  if (!m.done) return;
  state.reqs.delete(m.id);
  const p = r.pane;
  if (!state.panes.includes(p)) return;
  const evs = r.events; // oldest first
  for (const ev of evs) count(ev);
  scheduleDraw();
  if (r.kind === "fill") {
    const room = Math.max(0, state.maxRows - p.rowCount);
    appendRows(p, room > 0 ? evs.slice(-room) : [], true);
    // Older events remain when the limit cut the answer or the table
    // had no room for all of it.
    p.more = m.more || room < evs.length;
    p.els["older"].disabled = !p.more;
    p.fills++;
    p.section.dataset.filled = String(p.fills);
    return;
  }
  p.paging = false;
  p.more = m.more;
  p.els["older"].disabled = !p.more;
  p.extra += evs.length;
  appendRows(p, evs, true);
  p.els["older-note"].textContent = evs.length
    ? `${plural(evs.length, "older event")} loaded${m.more ? "" : "; that is all the daemon's history holds"}.`
    : "No older events in the daemon's history.";
  if (!m.more) p.more = false;
}

function onUpdated(c, m) {
  const p = paneOf(m.sub);
  if (!p) return;
  if (p.pendingFilter !== null) p.filter = p.pendingFilter;
  p.pendingFilter = null;
  if (m.subscription) p.subscription = m.subscription;
  clearFilterError(p);
  // The table shows the new filter from now on: refilled from history
  // up to the position where the new filter took over; live events
  // after it arrive above.
  clearPane(p);
  showActiveFilter(p);
  const seq = Number(String(m.position).split(":")[1]) || p.lastSeq;
  fill(c, p, seq);
}

function onUnsubscribed(c, m) {
  const p = paneOf(m.sub);
  if (!p) return;
  p.subscribed = false;
  if (m.reason === "unsubscribed" || m.reason === "shutdown") return;
  // The daemon ended it (slow with the disconnect policy, closed): say
  // so and resume after what we have.
  p.els["filter-active"].textContent = `Subscription ended by the daemon (${m.reason}${m.message ? ": " + m.message : ""}); resuming…`;
  setTimeout(() => { if (state.conn === c && state.panes.includes(p) && !p.subscribed) subscribePane(c, p, state.epoch); }, RECONNECT_MIN_MS);
}

function onError(c, m) {
  const p = m.sub ? paneOf(m.sub) : null;
  if (p && (m.code === "bad-filter" || (m.id && (m.id.startsWith("upd-") || m.id.startsWith("sub-"))))) {
    // A filter the daemon refused: shown in place; a subscribed pane
    // keeps its old filter.
    const text = p.pendingFilter ?? p.filter;
    p.pendingFilter = null;
    if (m.id && m.id.startsWith("sub-")) {
      p.subscribing = false;
      if (p.queuedFilter !== null) {
        // The filter it was opened with was refused, but another one is
        // waiting: subscribe with that.
        p.filter = p.pendingFilter = p.queuedFilter;
        p.queuedFilter = null;
        subscribePane(c, p, state.epoch);
        return;
      }
    }
    showActiveFilter(p);
    showFilterError(p, text, m);
    if (m.id && m.id.startsWith("sub-")) p.els["filter-active"].textContent = "Not subscribed: the daemon refused this pane's filter.";
    return;
  }
  if (m.id && m.id.startsWith("status-")) {
    $("subs-note").textContent = `Status not available: ${m.message}`;
    return;
  }
  const r = m.id ? state.reqs.get(m.id) : null;
  if (r) {
    state.reqs.delete(m.id);
    r.pane.paging = false;
    r.pane.els["older"].disabled = false;
    r.pane.els["older-note"].textContent = `History not available: ${m.message}`;
    return;
  }
  announce(`notifyd error: ${m.message}`);
  $("subs-note").textContent = `Daemon error (${m.code}): ${m.message}`;
}

function showRecovery(r) {
  const el = $("recovery");
  el.hidden = false;
  if (r.recovered) {
    el.dataset.recovered = "true";
    el.textContent = `Reconnected · recovered: no events missed (resumed after seq ${r.since})`;
    announce("Reconnected to notifyd and recovered: no events missed.");
  } else {
    el.dataset.recovered = "false";
    el.textContent = r.epochChanged
      ? "Reconnected · not recovered: the daemon restarted with a new epoch (see Losses)"
      : "Reconnected · not recovered: some events are gone (see Losses)";
    announce("Reconnected to notifyd, but some events were lost.");
  }
}

// ---- Events
// count puts an event in the rates and a loss in the Losses panel, once:
// hub events by seq, whichever pane (live or history) brought them;
// a subscriber's own loss (seq 0) per pane.
function count(ev) {
  if (ev.type === "snapshot") return;
  if (ev.seq > 0) {
    if (state.counted.has(ev.seq)) return;
    const t = Date.parse(ev.time);
    state.counted.set(ev.seq, Math.floor((isNaN(t) ? Date.now() : t) / 1000));
  }
  if (ev.type === "loss") countLoss(ev);
  else countRate(ev);
}

function onItems(c, p, items) {
  if (!p) return;
  for (const ev of items) {
    if (ev.seq > p.lastSeq && ev.type !== "snapshot") p.lastSeq = ev.seq;
    if (ev.loss && ev.loss.to_seq > p.lastSeq) p.lastSeq = ev.loss.to_seq;
    count(ev);
    p.incoming.push(ev);
  }
  const bound = state.maxRows + p.extra;
  if (p.incoming.length > bound) p.incoming.splice(0, p.incoming.length - bound);
  if (!p.flushTimer) p.flushTimer = setTimeout(() => flush(p), 16);
  scheduleDraw();
  // Keep the counters beside the table fresh while events flow.
  if (Date.now() - state.statusAt > STATUS_BUSY_MS) requestStatus(c);
  $("hub-seq").textContent = fmtInt(Math.max(...state.panes.map((q) => q.lastSeq)));
}

function scheduleDraw() {
  if (!state.drawTimer) state.drawTimer = setTimeout(() => { state.drawTimer = 0; drawRates(); }, 200);
}

function flush(p) {
  p.flushTimer = 0;
  const evs = p.incoming;
  p.incoming = [];
  if (!evs.length || !state.panes.includes(p)) return;
  if (state.paused) {
    p.pausedBuf.push(...evs);
    if (p.pausedBuf.length > state.maxRows) {
      p.pausedDropped += p.pausedBuf.length - state.maxRows;
      p.pausedBuf.splice(0, p.pausedBuf.length - state.maxRows);
    }
    updatePauseNote();
    return;
  }
  addRows(p, evs);
}

// addRows puts live events (oldest first) on top of p's table.
function addRows(p, evs) {
  const frag = document.createDocumentFragment();
  for (let i = evs.length - 1; i >= 0; i--) frag.append(makeRow(evs[i], false));
  p.els["events"].prepend(frag);
  p.rowCount += evs.length;
  trimRows(p);
  updateCount(p);
}

// appendRows puts older events (oldest first) below p's table.
function appendRows(p, evs, fromHistory) {
  const frag = document.createDocumentFragment();
  for (let i = evs.length - 1; i >= 0; i--) frag.append(makeRow(evs[i], fromHistory));
  p.els["events"].append(frag);
  p.rowCount += evs.length;
  updateCount(p);
}

function trimRows(p) {
  const tb = p.els["events"];
  let trimmed = false;
  while (p.rowCount > state.maxRows + p.extra && tb.lastElementChild) {
    const last = tb.lastElementChild;
    last.remove();
    if (last.classList.contains("ev")) { p.rowCount--; trimmed = true; }
  }
  if (trimmed && !p.paging) {
    // What went is still in the daemon's history: page it back in.
    p.more = true;
    p.els["older"].disabled = false;
  }
}

function clearPane(p) {
  p.els["events"].replaceChildren();
  p.rowCount = 0;
  p.extra = 0;
  p.pausedBuf = [];
  p.pausedDropped = 0;
  p.incoming = [];
  p.more = true;
  p.els["older-note"].textContent = "";
  for (const [id, r] of state.reqs) if (r.pane === p) state.reqs.delete(id);
  p.paging = false;
  p.els["older"].disabled = false;
  updatePauseNote();
  updateCount(p);
}

function updateCount(p) {
  p.els["events-count"].textContent = `${p.rowCount} of at most ${state.maxRows + p.extra} rows shown` +
    (p.filter ? " (filtered by the daemon)" : "") + (p.extra ? `, ${p.extra} of them paged in from history` : "");
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

// ---- The device column: one readable line per event, built from
// whatever identity the event carries (docs/dashboard.md, "Rows").
// Every field is optional: an older daemon, a device that was never seen
// while present, or a source that does not know it leaves it out, and the
// line falls back to the kernel's names.
const HEX4 = /^[0-9a-f]{4}$/i;
const ERRNO = { 1: "EPERM", 2: "ENOENT", 5: "EIO", 11: "EAGAIN", 12: "ENOMEM", 19: "ENODEV", 22: "EINVAL", 28: "ENOSPC",
  30: "EROFS", 32: "EPIPE", 62: "ETIME", 71: "EPROTO", 74: "EBADMSG", 75: "EOVERFLOW", 108: "ESHUTDOWN", 110: "ETIMEDOUT", 117: "EUCLEAN" };
const errnoText = (n) => ERRNO[n] ? `${ERRNO[n]} (${n})` : `errno ${n}`;
const nonEmpty = (...vs) => vs.map((v) => (v === undefined || v === null ? "" : String(v).trim())).filter(Boolean);

// fmtBytes: 1048576 → "1 MiB", 16000000000 → "14.9 GiB".
function fmtBytes(n) {
  n = Number(n);
  if (!isFinite(n) || n <= 0) return "";
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n >= 100 || Number.isInteger(n) ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

// usbIDs: "0781:5581" from vendor_id/product_id, or from vendor/product
// when those are the four hex digits of the ids.
function usbIDs(u) {
  const v = u.vendor_id ?? (HEX4.test(u.vendor || "") ? u.vendor : "");
  const p = u.product_id ?? (HEX4.test(u.product || "") ? u.product : "");
  return v && p ? `${v}:${p}` : "";
}

// usbName: "SanDisk Ultra" — the names from the USB ID database
// (vendor_name, product_name), else the device's own strings
// (manufacturer, product_string); "" when the event has neither.
function usbName(u) {
  const product = u.product_name || u.product_string || (HEX4.test(u.product || "") ? "" : u.product);
  const vendor = u.vendor_name || u.manufacturer || (u.vendor && !HEX4.test(u.vendor) ? u.vendor : "");
  if (product && vendor && product.toLowerCase().startsWith(vendor.toLowerCase())) return product;
  return nonEmpty(vendor, product).join(" ");
}

function usbSummary(u) {
  const name = usbName(u), ids = usbIDs(u);
  let s = name ? `${name} (${[ids, u.name].filter(Boolean).join(", ")})` : [u.name, ids].filter(Boolean).join(" ");
  if (u.speed) s += ` · ${u.speed}`;
  if (u.driver) s += ` · ${u.driver}`;
  if (u.error || u.class) {
    const what = u.class ? `${u.class} error` : "error";
    s += ` · ${what}${u.port ? ` on port ${u.port}` : ""}${u.error ? `: ${errnoText(u.error)}` : ""}`;
  }
  return s;
}

// blockName: "WDC WD10EZEX" from vendor and model, else the udev label.
function blockName(b) {
  const model = b.model || "", vendor = b.vendor || "";
  if (model && vendor && model.toLowerCase().startsWith(vendor.toLowerCase())) return model;
  return nonEmpty(vendor, model).join(" ");
}

function blockSummary(b) {
  const kname = b.device ? `${b.device} (${b.dev})` : b.dev;
  const name = blockName(b);
  const parts = [name ? `${name} · ${kname}` : kname];
  const size = fmtBytes(b.size_bytes ?? b.size);
  if (size) parts.push(size);
  if (b.label) parts.push(`“${b.label}”`);
  if (b.fs_type) parts.push(b.fs_type);
  if (b.removable) parts.push("removable");
  if (b.read_only) parts.push("read-only");
  if (b.backing_file) parts.push(`backed by ${b.backing_file}`);
  if (b.sector !== undefined && b.sector !== null) parts.push(`sector ${b.sector}`);
  return parts.join(" · ");
}

function mountSummary(ev, m) {
  const where = m.point || (m.id ? `mount ${m.id}` : "");
  // "ext4 from /dev/sdb1"; a pseudo filesystem's source is its type
  // ("tmpfs", "proc") or "none": not repeated.
  const what = nonEmpty(m.fstype, m.source && m.source !== "none" && m.source !== m.fstype ? `from ${m.source}` : "").join(" ");
  let s = [where, what].filter(Boolean).join(" · ");
  if (m.old_point && m.old_point !== m.point) s += ` · moved from ${m.old_point}`;
  if (ev.subtype === "readonly") s += m.readonly ? " · now read-only" : " · now read-write";
  else if (m.readonly) s += " · ro";
  if (m.old_options && m.options && m.old_options !== m.options) s += ` · options ${m.old_options} → ${m.options}`;
  if (m.propagation) s += ` · ${m.propagation}`;
  return s;
}

function superblockSummary(ev, sb) {
  const kname = sb.device ? `${sb.device} (${sb.dev})` : sb.dev;
  let s = [sb.point || "", sb.fstype || "", kname].filter(Boolean).join(" · ");
  if (sb.errno) s += ` · ${errnoText(sb.errno)}`;
  if (sb.error_count) s += ` · ${plural(sb.error_count, "error")} so far`;
  if (sb.inode) s += ` · inode ${sb.inode}`;
  if (ev.subtype === "readonly") s += " · forced read-only";
  return s;
}

function summary(ev) {
  if (ev.loss) {
    const n = ev.loss.count === null || ev.loss.count === undefined ? "unknown number of" : fmtInt(ev.loss.count) + (ev.loss.estimated ? " (estimated)" : "");
    const range = ev.loss.from_seq ? ` · seq ${ev.loss.from_seq}–${ev.loss.to_seq}` : "";
    return `${n} events lost${range}${ev.loss.reason ? " · " + ev.loss.reason : ""}`;
  }
  const parts = [];
  if (ev.block) parts.push(blockSummary(ev.block));
  if (ev.key) {
    let s = `key ${ev.key.id}`;
    if (ev.key.aux) s += ` aux ${ev.key.aux}`;
    if (ev.key.type) s += ` ${ev.key.type}`;
    if (ev.key.description) s += ` "${ev.key.description}"`;
    parts.push(s);
  }
  if (ev.usb) parts.push(usbSummary(ev.usb));
  if (ev.mount) parts.push(mountSummary(ev, ev.mount));
  if (ev.superblock) parts.push(superblockSummary(ev, ev.superblock));
  if (!parts.length && ev.props && ev.props.MESSAGE) parts.push(ev.props.MESSAGE);
  if (!parts.length && ev.object) parts.push(ev.object);
  return parts.join(" · ");
}

// rowDevice is the row's data-device: the kernel's name of what the
// event is about (what tests and filters match on).
function rowDevice(ev) {
  if (ev.block) return ev.block.device || ev.block.dev;
  if (ev.usb) return ev.usb.name;
  if (ev.key) return String(ev.key.id);
  if (ev.mount) return ev.mount.point || String(ev.mount.id ?? "");
  if (ev.superblock) return ev.superblock.device || ev.superblock.dev || "";
  return "";
}

// deviceCell: the summary, a "×N" badge for a coalesced event, and the
// kernel name underneath when the summary leads with a product name.
function deviceCell(ev) {
  const td = el("td", { class: "c-dev" }, summary(ev));
  const n = Number(ev.coalesced || 0);
  if (n > 1) {
    td.append(" ", el("span", { class: "coalesced", title: `${fmtInt(n)} kernel events of this kind for this device, coalesced into this one (not a loss)`,
      "aria-label": `coalesced from ${n} events` }, `×${fmtInt(n)}`));
  }
  return td;
}

// hostCell: the host an event came from (a fleet aggregator); a click
// opens a pane filtered to that host.
function hostCell(ev) {
  const td = el("td", { class: "c-host" });
  if (ev.host) {
    const b = el("button", { type: "button", class: "hostbtn", title: `Open a pane with host == "${ev.host}"` }, ev.host);
    b.addEventListener("click", () => addPane(`host == ${JSON.stringify(ev.host)}`, true));
    td.append(b);
  }
  return td;
}

// columns is the number of columns a row shows (the host column only
// once an event had a host): a details row spans exactly these, since a
// wider span would add a phantom column to the fixed table layout.
function columns() { return document.body.dataset.hosts === "true" ? 7 : 6; }

// showHosts turns the host column on for good once an event with a host
// arrives (a fleet aggregator); a single host's daemon never sends one.
function showHosts() {
  if (document.body.dataset.hosts === "true") return;
  document.body.dataset.hosts = "true";
  // An open details row spans every column, the host column too.
  for (const td of document.querySelectorAll("tr.details > td")) td.colSpan = columns();
  announce("Events from several hosts: host column shown.");
}

function makeRow(ev, fromHistory) {
  const cls = ["ev"];
  if (ev.type === "loss") cls.push("loss");
  if (ev.type === "snapshot") cls.push("snapshot");
  if (fromHistory) cls.push("history");
  const btn = el("button", { type: "button", class: "rowbtn", "aria-expanded": "false", title: ev.time || "" }, fmtTime(ev.time));
  btn.addEventListener("click", toggleDetails);
  if (ev.host) showHosts();
  const tr = el("tr", { class: cls.join(" "), "data-seq": ev.seq, "data-source": ev.source, "data-subtype": ev.subtype, "data-device": rowDevice(ev), "data-origin": ev.origin,
    "data-host": ev.host || undefined, "data-coalesced": ev.coalesced > 1 ? ev.coalesced : undefined },
    el("td", { class: "c-time" }, btn),
    hostCell(ev),
    el("td", { class: "c-seq" }, ev.seq ? String(ev.seq) : "–"),
    el("td", {}, el("span", { class: "src", text: ev.source || (ev.type === "loss" ? "all" : "") })),
    el("td", {}, ev.type === "snapshot" ? `${ev.subtype} (snapshot)` : (ev.subtype || "")),
    deviceCell(ev),
    el("td", { class: "c-origin" }, ev.origin || ""));
  tr.querySelector(".src").style.color = colorFor(ev.source);
  rowEvent.set(tr, ev);
  return tr;
}

// ---- Pause (every pane)
function setPaused(on) {
  state.paused = on;
  const b = $("pause");
  b.setAttribute("aria-pressed", String(on));
  b.textContent = on ? "Resume" : "Pause";
  if (!on) {
    for (const p of state.panes) {
      const buf = p.pausedBuf;
      p.pausedBuf = [];
      p.pausedDropped = 0;
      if (buf.length) addRows(p, buf);
    }
  }
  updatePauseNote();
}

function updatePauseNote() {
  const n = $("pause-note");
  if (!state.paused) { n.hidden = true; n.textContent = ""; return; }
  let held = 0, dropped = 0, kept = 0;
  for (const p of state.panes) { held += p.pausedBuf.length + p.pausedDropped; dropped += p.pausedDropped; kept += p.pausedBuf.length; }
  n.hidden = false;
  n.textContent = `Paused: ${plural(held, "new event")} held` +
    (dropped ? ` (only the newest ${kept} will be shown)` : "") +
    ". Counters and rates keep updating.";
}

// ---- Filter (per pane)
function showActiveFilter(p) {
  p.els["filter-active"].textContent = p.filter ? `Showing: ${p.filter}` : "Showing every event.";
  p.els["pane-title"].textContent = `Pane ${p.n}` + (p.filter ? `: ${p.filter}` : ": every event");
  updateCount(p);
}

function showFilterError(p, text, m) {
  const box = p.els["filter-error"];
  const input = p.els["filter"];
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

function clearFilterError(p) {
  const box = p.els["filter-error"];
  box.hidden = true;
  box.replaceChildren();
  p.els["filter"].removeAttribute("aria-invalid");
}

// applyFilter changes a pane's filter in place (update): the daemon
// answers updated (the pane refills under the new filter) or error (the
// pane keeps its filter).
function applyFilter(p, text) {
  text = text.trim();
  clearFilterError(p);
  const c = state.conn;
  if (!c || !c.helloed) {
    // Not connected: the filter applies when the pane subscribes.
    p.filter = text;
    p.everSubscribed = false;
    clearPane(p);
    showActiveFilter(p);
    if (!c) { clearTimeout(state.retryTimer); connect(state.everLive ? "reconnect" : "start"); }
    return;
  }
  if (p.subscribing) {
    // The pane's subscribe is on its way: apply the filter when it is in.
    p.queuedFilter = text;
    p.els["filter-active"].textContent = "Checking filter…";
    return;
  }
  p.pendingFilter = text;
  if (p.subscribed) {
    send(c, { type: "update", sub: p.sub, id: `upd-${p.n}-${state.nextReq++}`, filter: text });
  } else {
    // Refused before (or ended): subscribe afresh with the new filter.
    p.filter = text;
    p.everSubscribed = false;
    clearPane(p);
    subscribePane(c, p, state.epoch);
  }
  p.els["filter-active"].textContent = "Checking filter…";
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
  const row = el("tr", { class: "details", id }, el("td", { colspan: columns() }, details(ev)));
  tr.after(row);
  btn.setAttribute("aria-expanded", "true");
  btn.setAttribute("aria-controls", id);
}

function details(ev) {
  const dl = el("dl", { class: "fields" });
  const add = (k, v) => { if (v !== undefined && v !== null && v !== "") dl.append(el("div", {}, el("dt", {}, k), el("dd", {}, String(v)))); };
  // Every field of the event, whatever its source: top-level values
  // first, then each typed group (key, block, usb, mount, superblock,
  // loss, and any a newer daemon adds) as group.field.
  const groups = [];
  for (const [k, v] of Object.entries(ev)) {
    if (k === "props" || k === "raw") continue;
    if (v !== null && typeof v === "object") groups.push([k, v]);
    else if (k === "removed") { if (v) add("removed", "yes"); }
    else add(k, v);
  }
  for (const [group, obj] of groups) {
    for (const [k, v] of Object.entries(obj)) add(`${group}.${k}`, v === null ? "unknown" : typeof v === "object" ? JSON.stringify(v) : v);
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
  let total = 0;
  for (const s of series) total += Math.round(s.vals.reduce((x, v) => x + v, 0) * binS);
  canvas.dataset.total = String(total);
  if (state.counted.size > 4096) {
    for (const [seq, sec] of state.counted) if (sec < now - RATE_KEEP_S) state.counted.delete(seq);
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
    const pane = state.conn ? state.panes.find((p) => p.subscribed && p.subscription === u.id) : null;
    const mine = !!pane;
    const meter = el("meter", { min: 0, max: u.queue_len || 1, value: u.queued, high: (u.queue_len || 1) * 0.75, optimum: 0,
      title: `${u.queued} of ${u.queue_len}` });
    meter.setAttribute("aria-label", `queue ${u.queued} of ${u.queue_len}`);
    return el("tr", { "data-id": u.id, class: mine ? "mine" : "" },
      el("td", {}, `#${u.id} ${u.label || ""}`, mine ? ` (this page, pane ${pane.n})` : "",
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
  $("clear").addEventListener("click", () => { for (const p of state.panes) clearPane(p); });
  const rows = $("rows");
  if (![...rows.options].some((o) => o.value === String(state.maxRows))) rows.append(el("option", { value: state.maxRows }, String(state.maxRows)));
  rows.value = String(state.maxRows);
  rows.addEventListener("change", () => {
    state.maxRows = parseInt(rows.value, 10);
    for (const p of state.panes) { p.extra = 0; trimRows(p); updateCount(p); }
  });
  $("window").addEventListener("change", drawRates);
  $("add-pane").addEventListener("click", () => addPane("", true));
  $("signout").addEventListener("click", signOut);
  $("auth").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("auth-token").value.trim();
    $("auth-token").value = "";
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (_) { /* ignore */ }
    $("auth").hidden = true;
    state.attempts = 0;
    state.signedOut = false;
    connect(state.everLive ? "reconnect" : "start");
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", drawRates);
  window.addEventListener("resize", drawRates);
  addPane(params.get("filter") ?? "", false);
  for (const f of params.getAll("pane")) addPane(f, false);
  renderLosses();
  drawRates();
  setInterval(drawRates, 1000);
  start();
}

async function start() {
  if (secrets.code !== null && !(await exchange(secrets.code))) return;
  connect("start");
}

init();
