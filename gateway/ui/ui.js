// tandem's operator page. Served from the gateway under a strict Content-Security-Policy (no inline script or
// style). Rules this file keeps:
// - the admin key lives in sessionStorage and goes out only as "Authorization: Bearer" on fetch (never a cookie);
// - data from the log reaches the page through textContent and setAttribute of plain attributes, never innerHTML;
// - charts are SVG built here; every chart records what it drew in data-* attributes (the tests read them).
"use strict";

const KEY_SLOT = "tandem-admin-key";
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
const MAX_GROUPS = 8;
const SVG_NS = "http://www.w3.org/2000/svg";
const state = { overview: null, keys: [], next: null, loading: false };

// ---------------------------------------------------------------- DOM helpers (text only)

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

const colours = new Map();

function colour(name) {
  // The same name gets the same colour in every chart and table (a model, a route, a key): the next palette colour
  // the first time a name is drawn, so ten names never share one.
  const s = String(name);
  if (!colours.has(s)) colours.set(s, PALETTE[colours.size % PALETTE.length]);
  return colours.get(s);
}

function swatch(name) {
  const s = el("span", { class: "swatch" });
  s.style.background = colour(name);  // CSSOM, allowed by style-src 'self'
  return s;
}

function fmtUsd(x) {
  if (x === null || x === undefined) return "—";
  if (x === 0) return "$0";
  return x < 0.01 ? "$" + x.toPrecision(3) : "$" + x.toFixed(2);
}

function fmtNum(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  return Number(x).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 1 : digits });
}

function fmtTime(t) {
  const d = new Date(t * 1000);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

// ---------------------------------------------------------------- API

class AuthError extends Error {}

async function api(path, options) {
  const key = sessionStorage.getItem(KEY_SLOT);
  const opts = Object.assign({ method: "GET" }, options || {});
  opts.headers = Object.assign({ Authorization: "Bearer " + key }, opts.body ? { "Content-Type": "application/json" } : {});
  opts.credentials = "omit";
  opts.cache = "no-store";
  const res = await fetch(path, opts);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (res.status === 401 || res.status === 403) throw new AuthError((body && body.error && body.error.message) || "not allowed");
  if (!res.ok) throw new Error((body && body.error && body.error.message) || ("HTTP " + res.status));
  return body;
}

// ---------------------------------------------------------------- login

function showLogin(message) {
  sessionStorage.removeItem(KEY_SLOT);
  $("app").hidden = true;
  for (const e of document.querySelectorAll(".when-in")) e.hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  document.body.dataset.view = "login";
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  for (const e of document.querySelectorAll(".when-in")) e.hidden = false;
  document.body.dataset.view = "app";
}

// ---------------------------------------------------------------- charts

function groupSeries(rows, field, names, since, until, bucket) {
  // rows: [{t, <field>, requests, errors, cost_usd}] -> top groups (by requests) with dense buckets.
  const totals = new Map();
  for (const r of rows) {
    const g = names(r[field]);
    totals.set(g, (totals.get(g) || 0) + r.requests);
  }
  const ranked = [...totals.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map((x) => x[0]);
  const kept = new Set(ranked.slice(0, MAX_GROUPS));
  const first = Math.floor(since / bucket) * bucket;
  const n = Math.max(1, Math.ceil((until - first) / bucket));
  const groups = new Map();
  for (const r of rows) {
    let g = names(r[field]);
    if (!kept.has(g)) g = "other";
    if (!groups.has(g)) groups.set(g, Array.from({ length: n }, () => ({ requests: 0, errors: 0, cost: 0 })));
    const i = Math.min(n - 1, Math.max(0, Math.round((r.t - first) / bucket)));
    const b = groups.get(g)[i];
    b.requests += r.requests; b.errors += r.errors; b.cost += r.cost_usd;
  }
  const order = [...ranked.filter((g) => kept.has(g)), ...(groups.has("other") ? ["other"] : [])];
  return { first, n, bucket, groups: order.map((g) => ({ name: g, buckets: groups.get(g) })) };
}

function lineChart(container, dense, value, fmt) {
  // One polyline per group over the buckets; gaps where value() is null.
  clear(container);
  const W = 560, H = 200, L = 56, R = 10, T = 10, B = 26;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img" });
  let max = 0;
  for (const g of dense.groups) for (const b of g.buckets) { const v = value(b); if (v !== null && v > max) max = v; }
  if (max <= 0) max = 1;
  const x = (i) => L + (dense.n <= 1 ? 0 : (i / (dense.n - 1)) * (W - L - R));
  const y = (v) => T + (1 - v / max) * (H - T - B);
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: L - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, fmt(v)));
  }
  for (const i of [0, Math.floor((dense.n - 1) / 2), dense.n - 1]) {
    root.append(svg("text", { x: x(i), y: H - 8, class: "tick", "text-anchor": i === 0 ? "start" : i === dense.n - 1 ? "end" : "middle" },
      fmtTime(dense.first + i * dense.bucket).slice(5, 16)));
  }
  let drawn = 0, points = 0;
  for (const g of dense.groups) {
    let path = "";
    let pen = false;
    const dots = [];
    g.buckets.forEach((b, i) => {
      const v = value(b);
      if (v === null) { pen = false; return; }
      path += (pen ? "L" : "M") + x(i).toFixed(1) + "," + y(v).toFixed(1);
      pen = true;
      dots.push([x(i), y(v)]);
    });
    if (!path) continue;
    const p = svg("path", { d: path, fill: "none", stroke: colour(g.name), "stroke-width": 2, class: "series" });
    p.append(svg("title", {}, g.name));
    root.append(p);
    const sparse = dots.filter((d) => d[1] < T + (H - T - B) - 0.5).length < 40;  // few non-zero points: mark them
    for (const [cx, cy] of dots) {
      if (sparse && cy < T + (H - T - B) - 0.5) root.append(svg("circle", { cx, cy, r: 3, fill: colour(g.name), class: "dot" }));
    }
    points += dots.length;
    drawn++;
  }
  if (dense.groups.length === 0) root.append(svg("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, "no requests in this window"));
  container.dataset.series = String(drawn);
  container.dataset.points = String(points);
  container.append(root);
}

function stackedBar(parts, total) {
  // parts: [{name, value}] -> one horizontal bar, each part coloured by name.
  const W = 560, H = 22;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "bar" });
  let x0 = 0;
  for (const p of parts) {
    const w = total > 0 ? (p.value / total) * W : 0;
    const r = svg("rect", { x: x0, y: 0, width: Math.max(0, w), height: H, fill: colour(p.name), class: "part" });
    r.append(svg("title", {}, `${p.name}: ${fmtNum(p.value, 0)} (${fmtNum((100 * p.value) / (total || 1))}%)`));
    root.append(r);
    x0 += w;
  }
  root.dataset.parts = String(parts.length);
  return root;
}

// ---------------------------------------------------------------- panels

function keyName(id) {
  if (id === null || id === undefined) return "(no key)";
  const names = (state.overview && state.overview.key_names) || {};
  return names[id] ? `${names[id]} (${id})` : id;
}

function renderTotals(t) {
  const box = clear($("totals"));
  const rate = t.requests ? t.errors / t.requests : 0;
  const cards = [["requests", fmtNum(t.requests, 0)], ["errors", `${fmtNum(t.errors, 0)} (${fmtNum(100 * rate)}%)`],
    ["spend", fmtUsd(t.cost_usd)], ["tokens", fmtNum(t.prompt_tokens + t.completion_tokens, 0)],
    ["mean latency", t.mean_latency_ms === null ? "—" : fmtNum(t.mean_latency_ms) + " ms"]];
  for (const [label, value] of cards) box.append(el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value)));
}

function renderCharts() {
  const o = state.overview;
  if (!o) return;
  const byKey = $("group-by").value === "key";
  const rows = byKey ? o.by_key : o.by_route;
  const dense = groupSeries(rows, byKey ? "key_id" : "route", byKey ? keyName : (r) => r || "?", o.window.since,
    o.window.until, o.window.bucket_s);
  lineChart($("chart-requests"), dense, (b) => b.requests, (v) => fmtNum(v, 0));
  lineChart($("chart-spend"), dense, (b) => b.cost, (v) => (v < 0.01 ? v.toPrecision(2) : v.toFixed(2)));
  lineChart($("chart-errors"), dense, (b) => (b.requests ? b.errors / b.requests : null), (v) => fmtNum(100 * v, 0) + "%");
  const legend = clear($("legend"));
  for (const g of dense.groups) legend.append(el("span", { class: "item" }, swatch(g.name), g.name));
}

function renderLatency(rows) {
  const body = clear($("latency").tBodies[0]);
  const max = Math.max(1, ...rows.map((r) => r.p99_ms || 0));
  for (const r of rows) {
    const bar = svg("svg", { viewBox: "0 0 200 12", width: "200", height: "12" });
    for (const [p, cls] of [["p99_ms", "p99"], ["p90_ms", "p90"], ["p50_ms", "p50"]]) {
      bar.append(svg("rect", { x: 0, y: 1, height: 10, width: (200 * (r[p] || 0)) / max, class: cls }));
    }
    body.append(el("tr", {}, el("td", {}, swatch(r.route), r.route), el("td", { class: "num" }, fmtNum(r.requests, 0)),
      el("td", { class: "num" }, fmtNum(r.p50_ms)), el("td", { class: "num" }, fmtNum(r.p90_ms)),
      el("td", { class: "num" }, fmtNum(r.p99_ms)), el("td", {}, bar)));
  }
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no requests in this window")));
}

function renderRouters(list) {
  const box = clear($("routers"));
  box.dataset.routers = String(list.length);
  if (!list.length) { box.append(el("p", { class: "muted" }, "no router decisions in this window")); return; }
  for (const r of list) {
    const parts = Object.entries(r.chosen).sort((a, b) => b[1] - a[1]).map(([name, value]) => ({ name, value }));
    const legend = el("div", { class: "legend" });
    for (const p of parts) legend.append(el("span", { class: "item" }, swatch(p.name), `${p.name} ${fmtNum((100 * p.value) / r.requests)}% (${fmtNum(p.value, 0)})`));
    const reasons = el("table", { class: "reasons" }, el("thead", {}, el("tr", {}, el("th", {}, "reason"), el("th", {}, "requests"))));
    const tb = el("tbody");
    for (const x of r.reasons) tb.append(el("tr", {}, el("td", {}, x.reason), el("td", { class: "num" }, fmtNum(x.requests, 0))));
    reasons.append(tb);
    box.append(el("div", { class: "router", "data-route": r.route }, el("h3", {}, `${r.route} — ${fmtNum(r.requests, 0)} decisions`),
      stackedBar(parts, r.requests), legend, reasons));
  }
}

function renderCollab(list) {
  const box = clear($("collab"));
  box.dataset.routes = String(list.length);
  if (!list.length) { box.append(el("p", { class: "muted" }, "no collaboration requests in this window")); return; }
  for (const c of list) {
    const total = c.members.reduce((s, m) => s + m.completion_tokens, 0);
    const parts = c.members.map((m) => ({ name: m.model, value: m.completion_tokens }));
    const tb = el("tbody");
    for (const m of c.members) {
      tb.append(el("tr", {}, el("td", {}, swatch(m.model), m.model), el("td", { class: "num" }, fmtNum(100 * m.share) + "%"),
        el("td", { class: "num" }, fmtNum(m.completion_tokens, 0)), el("td", { class: "num" }, fmtNum(m.prompt_tokens, 0)),
        el("td", { class: "num" }, fmtUsd(m.cost_usd))));
    }
    const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "member"), el("th", {}, "share"),
      el("th", {}, "completion tokens"), el("th", {}, "prompt tokens"), el("th", {}, "USD"))), tb);
    box.append(el("div", { class: "collab", "data-route": c.route }, el("h3", {}, c.route), stackedBar(parts, total), table));
  }
}

function renderKeys() {
  const body = clear($("keys").tBodies[0]);
  for (const k of state.keys) {
    const u = k.usage || {};
    const input = el("input", { type: "number", min: "0", step: "any", class: "budget", "aria-label": "budget USD",
      placeholder: "none", value: k.budget_usd === null ? "" : String(k.budget_usd) });
    const save = el("button", { type: "button", class: "set-budget" }, "Set");
    save.addEventListener("click", () => patchKey(k.id, { budget_usd: input.value === "" ? null : Number(input.value) }));
    const revoke = el("button", { type: "button", class: "revoke", disabled: k.revoked }, k.revoked ? "revoked" : "Revoke");
    revoke.addEventListener("click", () => {
      if (revoke.dataset.armed === "1") { revokeKey(k.id); return; }
      revoke.dataset.armed = "1";
      revoke.textContent = "Confirm revoke";
      setTimeout(() => { if (revoke.isConnected && revoke.dataset.armed === "1") { revoke.dataset.armed = ""; revoke.textContent = "Revoke"; } }, 5000);
    });
    body.append(el("tr", { "data-key": k.id, class: k.revoked ? "revoked" : null },
      el("td", {}, k.name || "—"), el("td", {}, el("code", {}, k.id)), el("td", { class: "num" }, fmtUsd(k.budget_usd)),
      el("td", { class: "num" }, fmtUsd(u.spent_usd)), el("td", { class: "num left" }, fmtUsd(u.budget_left_usd)),
      el("td", { class: "num" }, k.rpm === null ? "—" : fmtNum(k.rpm, 0)), el("td", { class: "num" }, k.tpm === null ? "—" : fmtNum(k.tpm, 0)),
      el("td", { class: "num" }, `${fmtNum(u.logged_requests, 0)} · ${fmtUsd(u.logged_cost_usd)}`),
      el("td", { class: "state" }, k.revoked ? "revoked" : "live"), el("td", {}, input, save), el("td", {}, revoke)));
  }
  if (!state.keys.length) body.append(el("tr", {}, el("td", { colspan: 11, class: "muted" }, "no keys yet")));
}

function usageChips(usage) {
  const box = el("span", { class: "chips" });
  for (const u of usage || []) {
    const chip = el("span", { class: "chip", "data-model": u.model }, swatch(u.model),
      `${u.model} ${fmtNum(u.prompt_tokens, 0)}→${fmtNum(u.completion_tokens, 0)}`);
    chip.setAttribute("title", `${u.model}: ${u.prompt_tokens} prompt, ${u.completion_tokens} completion tokens, ${fmtUsd(u.cost_usd)}`);
    box.append(chip);
  }
  return box;
}

function writtenText(runs) {
  // A response as the runs of the models that wrote it (r.provenance): one span per run, its text set with
  // textContent, tinted and underlined in that model's colour (the colour of its usage chip), the model as tooltip.
  const box = el("span", { class: "text written" });
  for (const run of runs) {
    const s = el("span", { class: "run", "data-model": run.model, title: run.model });
    s.textContent = run.text;
    s.style.backgroundColor = colour(run.model) + "40";  // #rrggbb + alpha: the model's colour at 25%
    s.style.borderBottomColor = colour(run.model);
    box.append(s);
  }
  return box;
}

function writersLegend(runs) {
  // Which colour is which model, with the share of the shown text each wrote.
  const chars = new Map();
  let total = 0;
  for (const run of runs) { chars.set(run.model, (chars.get(run.model) || 0) + run.text.length); total += run.text.length; }
  const legend = el("div", { class: "legend writers" }, el("span", { class: "muted" }, "written by"));
  for (const [model, n] of chars) legend.append(el("span", { class: "item", "data-model": model }, swatch(model), `${model} ${fmtNum((100 * n) / (total || 1), 0)}%`));
  return legend;
}

function requestRows(r) {
  const d = r.decision || {};
  const chosen = d.chosen && d.chosen !== r.route ? `${r.route} → ${d.chosen}` : (r.route || "?");
  const main = el("tr", { class: "req " + (r.status === "ok" ? "ok" : "err"), "data-id": r.id },
    el("td", {}, fmtTime(r.created_at)), el("td", {}, chosen), el("td", {}, keyName(r.key_id)),
    el("td", { class: "status" }, r.status === "ok" ? String(r.http_status || 200) : `${r.http_status || ""} ${r.error || r.status}`),
    el("td", { class: "num" }, fmtNum(r.latency_ms)), el("td", { class: "num" }, fmtUsd(r.cost_usd)),
    el("td", {}, usageChips(r.usage)), el("td", { class: "reason" }, d.reason || ""));
  const parts = [];
  for (const m of r.messages || []) {
    parts.push(el("div", { class: "msg" }, el("span", { class: "role" }, m.role), el("span", { class: "text" }, m.text), m.cut ? el("span", { class: "muted" }, " …(cut)") : null));
  }
  if (r.response !== null && r.response !== undefined) {
    const runs = Array.isArray(r.provenance) && r.provenance.length ? r.provenance : null;
    const writers = (r.usage || []).filter((u) => u.completion_tokens > 0).map((u) => u.model);
    const resp = el("div", { class: "msg response" }, el("span", { class: "role" }, "response"),
      runs ? writtenText(runs) : el("span", { class: "text" }, r.response), r.response_cut ? el("span", { class: "muted" }, " …(cut)") : null);
    if (runs) resp.append(writersLegend(runs));
    else if (writers.length === 1) {
      resp.classList.add("one-writer");
      resp.querySelector(".text").style.borderColor = colour(writers[0]);
    }
    parts.push(resp);
  }
  if (!parts.length) parts.push(el("span", { class: "muted" }, "no text logged (the key does not log prompts, or the request failed before its prompt was read)"));
  const detail = el("tr", { class: "detail" }, el("td", { colspan: 8 }, el("details", {}, el("summary", {}, "text"), ...parts)));
  return [main, detail];
}

function renderRequests(rows, append) {
  const body = $("requests").tBodies[0];
  if (!append) clear(body);
  for (const r of rows) body.append(...requestRows(r));
  if (!body.rows.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "no requests logged yet")));
  $("older").hidden = !state.next;
  $("requests").dataset.rows = String(body.querySelectorAll("tr.req").length);
}

// ---------------------------------------------------------------- actions

async function loadKeys() {
  state.keys = (await api("/admin/keys")).data;
  renderKeys();
}

async function load() {
  if (state.loading) return;
  state.loading = true;
  const t0 = performance.now();
  document.body.dataset.loaded = "";
  $("status").textContent = "loading…";
  try {
    const hours = $("hours").value;
    const [overview, recent, keys] = await Promise.all([api(`/ui/api/overview?hours=${encodeURIComponent(hours)}`),
      api("/ui/api/requests?limit=50"), api("/admin/keys")]);
    state.overview = overview; state.keys = keys.data; state.next = recent.next;
    showApp();
    renderTotals(overview.totals);
    renderCharts();
    renderLatency(overview.latency);
    renderRouters(overview.routers);
    renderCollab(overview.collab);
    renderKeys();
    renderRequests(recent.data, false);
    const ms = performance.now() - t0;
    $("status").textContent = `${fmtNum(overview.totals.requests, 0)} requests in the window · loaded in ${fmtNum(ms, 0)} ms`;
    document.body.dataset.loadMs = String(ms);
    document.body.dataset.loadedAt = String(performance.now());  // since navigation start
    document.body.dataset.loaded = "1";
  } catch (e) {
    if (e instanceof AuthError) showLogin(e.message);
    else $("status").textContent = "error: " + e.message;
    document.body.dataset.loaded = "error";
  } finally {
    state.loading = false;
  }
}

async function older() {
  if (!state.next) return;
  const page = await api(`/ui/api/requests?limit=50&before=${encodeURIComponent(state.next)}`);
  state.next = page.next;
  renderRequests(page.data, true);
}

async function guarded(fn) {
  $("keys-error").textContent = "";
  try { await fn(); } catch (e) {
    if (e instanceof AuthError) showLogin(e.message);
    else $("keys-error").textContent = e.message;
  }
}

function patchKey(id, fields) {
  return guarded(async () => { await api(`/admin/keys/${encodeURIComponent(id)}`, { method: "PATCH", body: JSON.stringify(fields) }); await loadKeys(); });
}

function revokeKey(id) {
  return guarded(async () => { await api(`/admin/keys/${encodeURIComponent(id)}`, { method: "DELETE" }); await loadKeys(); });
}

function createKey(ev) {
  ev.preventDefault();
  const num = (id) => ($(id).value === "" ? null : Number($(id).value));
  const body = { name: $("new-name").value || null, budget_usd: num("new-budget"), rpm: num("new-rpm"), tpm: num("new-tpm"),
    log_prompts: $("new-log").checked };
  return guarded(async () => {
    const made = await api("/admin/keys", { method: "POST", body: JSON.stringify(body) });
    $("new-key-value").textContent = made.key;
    $("new-key").hidden = false;
    $("key-create").reset();
    await loadKeys();
  });
}

function init() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_SLOT, $("admin-key").value.trim());
    $("admin-key").value = "";
    load();
  });
  $("logout").addEventListener("click", () => showLogin(""));
  $("refresh").addEventListener("click", load);
  $("hours").addEventListener("change", load);
  $("group-by").addEventListener("change", renderCharts);
  $("older").addEventListener("click", () => older().catch((e) => { $("status").textContent = "error: " + e.message; }));
  $("key-create").addEventListener("submit", createKey);
  if (sessionStorage.getItem(KEY_SLOT)) load(); else showLogin("");
}

document.addEventListener("DOMContentLoaded", init);
