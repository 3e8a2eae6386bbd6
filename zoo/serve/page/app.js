// zoo catalog page: reads GET /api/zoo/cards, filters the table, draws the trade-off charts as inline SVG,
// shows a card's panel, and chats through the server's own /v1/chat/completions (SSE). No libraries; every
// card string goes into the page as text, never as HTML (cards come from registries).
"use strict";

const KEY_STORAGE = "zoo-api-key";
const SVG_NS = "http://www.w3.org/2000/svg";
const state = { models: [], byId: new Map(), sort: { field: "name", dir: 1 }, selected: null, history: [], abort: null };

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// ---- formatting --------------------------------------------------------------------------------------------
function size(bytes) {
  if (bytes == null) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (bytes >= 1000 && i < units.length - 1) { bytes /= 1000; i++; }
  return i === 0 ? `${bytes} B` : `${bytes.toFixed(1)} ${units[i]}`;
}
const pct = (x) => (x == null ? "–" : `${(x * 100).toFixed(1)}%`);
const num = (x, digits) => (x == null ? "–" : Number(x).toFixed(digits));
const text = (x) => (x == null ? "–" : typeof x === "object" ? JSON.stringify(x) : String(x));

// ---- API (with the key, when the server wants one) ---------------------------------------------------------
function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    const e = body.error;
    return typeof e === "string" ? e : (e && e.message) || JSON.stringify(body);
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function api(path, init = {}) {
  const response = await fetch(path, { ...init, headers: headers(init.headers) });
  if (response.status === 401) {
    askForKey(await errorMessage(response));
    throw new Error("the server wants an API key");
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("key-error").textContent = sessionStorage.getItem(KEY_STORAGE) ? message : "";
  $("key-input").focus();
}

// ---- loading -----------------------------------------------------------------------------------------------
async function load() {
  $("status").textContent = "loading cards…";
  let data;
  try {
    data = await (await api("/api/zoo/cards")).json();
  } catch (err) {
    $("status").textContent = `cannot load the catalog: ${err.message}`;
    return;
  }
  $("key-form").hidden = true;
  state.models = data.models;
  state.byId = new Map(data.models.map((m) => [m.id, m]));
  $("status").textContent = `${data.models.length} models`;
  $("sources").replaceChildren(...data.sources.map((s) => el("li", { class: s.ok ? "" : "bad" },
    s.ok ? `${s.source}: ${s.count} from ${s.where}` : `${s.source}: ${s.message}`)));
  fillFilterChoices();
  renderTable();
  renderCharts(data.charts);
  loadChatModels();
  openFromHash();
}

function fillFilterChoices() {
  const options = (select, values, label) => {
    const keep = select.value;
    select.replaceChildren(el("option", { value: "" }, "any"),
      ...values.map((v) => el("option", { value: String(v) }, label(v))));
    select.value = keep;
  };
  options($("f-base"), [...new Set(state.models.map((m) => m.base_model))].sort(), (v) => v);
  options($("f-bits"), [...new Set(state.models.map((m) => m.bits).filter((b) => b != null))].sort((a, b) => a - b),
    (v) => `${v}`);
}

// ---- table and filters -------------------------------------------------------------------------------------
function filters() {
  const value = (id) => $(id).value.trim();
  const number = (id) => (value(id) === "" ? null : Number(value(id)));
  return { base: value("f-base"), bits: value("f-bits"), sparsity: number("f-sparsity"), size: number("f-size"),
    ppl: number("f-ppl"), tps: number("f-tps"), text: value("f-text").toLowerCase() };
}

// A filter on a field the card does not measure excludes the card (as `zoo search` does).
function passes(m, f) {
  if (f.base && m.base_model !== f.base) return false;
  if (f.bits && String(m.bits) !== f.bits) return false;
  if (f.sparsity != null && (m.sparsity == null || m.sparsity * 100 < f.sparsity)) return false;
  if (f.size != null && (m.size_bytes == null || m.size_bytes > f.size * 1e6)) return false;
  if (f.ppl != null && (m.perplexity == null || m.perplexity > f.ppl)) return false;
  if (f.tps != null && (m.decode_tps == null || m.decode_tps < f.tps)) return false;
  if (f.text) {
    const hay = [m.name, m.method, m.base_model, m.detail.description, ...m.detail.tags].join(" ").toLowerCase();
    if (!f.text.split(/\s+/).every((w) => hay.includes(w))) return false;
  }
  return true;
}

function compare(a, b) {
  const { field, dir } = state.sort;
  const x = a[field], y = b[field];
  if (x == null && y == null) return a.id < b.id ? -1 : 1;
  if (x == null) return 1;  // unmeasured last, whichever the direction
  if (y == null) return -1;
  return (x < y ? -1 : x > y ? 1 : 0) * dir || (a.id < b.id ? -1 : 1);
}

function renderTable() {
  const f = filters();
  const shown = state.models.filter((m) => passes(m, f)).sort(compare);
  $("shown").textContent = `${shown.length} of ${state.models.length} shown`;
  document.querySelectorAll("#catalog th[data-sort]").forEach((th) => {
    th.classList.toggle("asc", th.dataset.sort === state.sort.field && state.sort.dir > 0);
    th.classList.toggle("desc", th.dataset.sort === state.sort.field && state.sort.dir < 0);
  });
  $("catalog").tBodies[0].replaceChildren(...shown.map((m) => {
    const row = el("tr", { "data-id": m.id, class: m.id === state.selected ? "selected" : "" },
      el("td", {}, el("a", { href: `#card=${encodeURIComponent(m.id)}` }, m.id)),
      el("td", {}, m.base_model), el("td", {}, m.method ?? "–"),
      el("td", { class: "num" }, pct(m.sparsity)), el("td", { class: "num" }, text(m.bits)),
      el("td", { class: "num" }, size(m.size_bytes)), el("td", { class: "num" }, num(m.perplexity, 2)),
      el("td", { class: "num", title: m.machine ? `measured on ${m.machine}` : "" }, num(m.decode_tps, 1)),
      el("td", {}, ...m.sources.map((s) => el("span", { class: `badge ${s}` }, s))));
    row.addEventListener("click", (e) => { if (e.target.tagName !== "A") location.hash = `card=${encodeURIComponent(m.id)}`; });
    return row;
  }));
  document.querySelectorAll("#charts .base").forEach((div) => {
    div.hidden = Boolean(f.base) && div.dataset.base !== f.base;
  });
}

// ---- charts ------------------------------------------------------------------------------------------------
const W = 380, H = 250, PAD = { left: 52, right: 28, top: 12, bottom: 36 };

// An axis over [lo, hi]: logarithmic when the values span a factor of 10 or more (perplexities of pruned
// models do), else linear; returns the ticks and a map from a value to [0, 1].
function axis(lo, hi) {
  if (lo > 0 && hi / lo >= 10) {
    const first = Math.floor(Math.log10(lo)), last = Math.ceil(Math.log10(hi));
    const ticks = [];
    for (let e = first; e <= last; e++) {
      for (const k of last - first > 2 ? [1] : [1, 2, 5]) {
        const v = Number((k * 10 ** e).toPrecision(12));
        if (v >= lo / 1.0001 && v <= hi * 1.0001) ticks.push(v);
      }
    }
    const a = Math.log10(lo) - 0.05 * Math.log10(hi / lo), b = Math.log10(hi) + 0.05 * Math.log10(hi / lo);
    return { ticks, at: (v) => (Math.log10(v) - a) / (b - a), log: true };
  }
  if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
  const step0 = (hi - lo) / 4, mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= step0);
  const start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = start; v <= end + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return { ticks, at: (v) => (v - start) / (end - start), log: false };
}

const shortSize = (bytes) => size(bytes).replace(/\.0 /, " ");

function chartSvg(chart, base) {
  const xs = chart.points.map((p) => p.x), ys = chart.points.map((p) => p.y);
  const xa = axis(Math.min(...xs), Math.max(...xs)), ya = axis(Math.min(...ys), Math.max(...ys));
  const sx = (v) => PAD.left + xa.at(v) * (W - PAD.left - PAD.right);
  const sy = (v) => H - PAD.bottom - ya.at(v) * (H - PAD.top - PAD.bottom);
  const fmt = chart.id === "size" ? shortSize : (v) => String(v);
  const root = svg("svg", { class: "chart", "data-chart": chart.id, "data-base": base, width: W, height: H,
    viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${chart.y_label} against ${chart.x_label}, ${base}` });
  for (const v of xa.ticks) {
    root.append(svg("line", { class: "grid", x1: sx(v), x2: sx(v), y1: PAD.top, y2: H - PAD.bottom }));
    const t = svg("text", { x: sx(v), y: H - PAD.bottom + 14, "text-anchor": "middle" }); t.textContent = fmt(v); root.append(t);
  }
  for (const v of ya.ticks) {
    root.append(svg("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: sy(v), y2: sy(v) }));
    const t = svg("text", { x: PAD.left - 4, y: sy(v) + 4, "text-anchor": "end" }); t.textContent = String(v); root.append(t);
  }
  root.append(svg("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }));
  root.append(svg("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }));
  const xl = svg("text", { x: (W + PAD.left) / 2, y: H - 6, "text-anchor": "middle" });
  xl.textContent = `${chart.x_label}${xa.log ? " (log)" : ""}, ${chart.x_better} is better`;
  const yl = svg("text", { x: 12, y: (H - PAD.bottom) / 2, transform: `rotate(-90 12 ${(H - PAD.bottom) / 2})`, "text-anchor": "middle" });
  yl.textContent = `${chart.y_label}${ya.log ? " (log)" : ""}, ${chart.y_better} is better`;
  root.append(xl, yl);
  const front = chart.points.filter((p) => p.front).sort((a, b) => a.x - b.x);
  if (front.length > 1) {
    root.append(svg("polyline", { class: "pareto-line", points: front.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" ") }));
  }
  for (const p of chart.points) {
    const c = svg("circle", { class: `point${p.front ? " front" : ""}`, "data-id": p.id, cx: sx(p.x), cy: sy(p.y), r: 5 });
    const title = svg("title");
    title.textContent = `${p.id}\n${chart.x_label}: ${fmt(p.x)}\n${chart.y_label}: ${p.y}${p.front ? "\nPareto front" : ""}`;
    c.append(title);
    c.addEventListener("click", () => { location.hash = `card=${encodeURIComponent(p.id)}`; });
    root.append(c);
  }
  return root;
}

function renderCharts(charts) {
  $("charts").replaceChildren(...charts.map((b) => el("div", { class: "base", "data-base": b.base_model },
    el("h3", {}, b.base_model), el("div", { class: "pair" }, ...b.charts.map((c) => chartSvg(c, b.base_model))))));
  if (!charts.length) $("charts").append(el("p", { class: "hint" }, "No model here has a measured perplexity yet."));
}

// ---- card panel --------------------------------------------------------------------------------------------
function definitions(obj) {
  if (obj == null) return el("p", { class: "hint" }, "not recorded");
  const dl = el("dl");
  for (const [k, v] of Object.entries(obj)) {
    if (v == null) continue;
    dl.append(el("dt", {}, k), el("dd", {}, typeof v === "object" ? el("pre", {}, JSON.stringify(v, null, 2)) : String(v)));
  }
  return dl;
}

function tableOf(columns, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((cell) => el("td", {}, text(cell)))))));
}

function openCard(id) {
  const m = state.byId.get(id);
  if (!m) return;
  const d = m.detail;
  state.selected = id;
  const body = [
    el("h2", {}, m.id), el("p", {}, d.description),
    definitions({ "base model": m.base_model, architecture: m.architecture, parameters: m.parameters,
      license: d.license, "zoo version": d.zoo_version, where: m.sources.join(", "), tags: d.tags.join(", ") || null }),
    el("h3", {}, "Base model"), definitions(d.base_model),
    el("h3", {}, "Compression"), definitions(d.compression),
    el("h3", {}, "Calibration"), definitions(d.calibration),
    el("h3", {}, "Recipe"), d.recipe ? el("pre", { class: "recipe" }, JSON.stringify(d.recipe, null, 2))
      : el("p", { class: "hint" }, "no recipe: this card cannot be rebuilt from its base"),
  ];
  if (d.conversion) body.push(el("h3", {}, "Conversion"), definitions(d.conversion));
  body.push(el("h3", {}, "Measured"), d.measurements.length
    ? tableOf(["metric", "value", "machine", "threads", "protocol"],
      d.measurements.map((x) => [x.metric, x.base != null ? `${x.value} (base ${x.base})` : x.value, x.machine,
        x.threads, x.protocol]))
    : el("p", { class: "hint" }, "nothing measured"));
  body.push(el("h3", {}, "Files"), d.files.length
    ? tableOf(["path", "size", "sha256"], d.files.map((f) => [f.path, size(f.size), f.sha256]))
    : el("p", { class: "hint" }, "no file list"));
  if (m.local) {
    const chat = el("button", { type: "button" }, "Chat with this model");
    chat.addEventListener("click", () => { $("chat-model").value = m.id; $("chat-input").focus(); });
    body.push(el("p", {}, chat));
  }
  $("card-body").replaceChildren(...body);
  $("card").hidden = false;
  document.querySelectorAll("#catalog tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.id === id));
  document.querySelectorAll("svg.chart .point").forEach((c) => c.classList.toggle("selected", c.dataset.id === id));
}

function openFromHash() {
  const match = location.hash.match(/^#card=(.+)$/);
  if (match) openCard(decodeURIComponent(match[1]));
  else { $("card").hidden = true; state.selected = null; }
}

// ---- chat --------------------------------------------------------------------------------------------------
async function loadChatModels() {
  const select = $("chat-model"), keep = select.value;
  try {
    const list = await (await api("/v1/models")).json();
    select.replaceChildren(...list.data.map((m) => el("option", { value: m.id }, m.id)));
    if (keep) select.value = keep;
  } catch (err) {
    select.replaceChildren(el("option", { value: "" }, `(${err.message})`));
  }
}

function addMessage(role, content) {
  const node = el("div", { class: `msg ${role}` }, content);
  $("chat-log").append(node);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return node;
}

// Server-sent events from a fetch body: yields each `data:` payload (a JSON chunk, or "[DONE]").
async function* events(response) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield data;
    }
  }
}

async function send(event) {
  event.preventDefault();
  const content = $("chat-input").value;
  const model = $("chat-model").value;
  if (!content.trim() || !model || state.abort) return;
  $("chat-input").value = "";
  state.history.push({ role: "user", content });
  addMessage("user", content);
  const answer = addMessage("assistant", "");
  answer.classList.add("streaming");
  const request = { model, messages: state.history, stream: true, temperature: Number($("chat-temperature").value || 0) };
  if ($("chat-max").value) request.max_tokens = Number($("chat-max").value);
  state.abort = new AbortController();
  $("chat-send").disabled = true;
  $("chat-stop").hidden = false;
  let reply = "";
  try {
    const response = await api("/v1/chat/completions", { method: "POST", body: JSON.stringify(request),
      headers: { "Content-Type": "application/json" }, signal: state.abort.signal });
    for await (const data of events(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) { reply += delta.content; answer.textContent = reply; }
    }
    state.history.push({ role: "assistant", content: reply });
  } catch (err) {
    state.history.pop();  // the question goes unanswered: not part of the next request's history
    if (err.name !== "AbortError") addMessage("error", err.message);
  } finally {
    answer.classList.remove("streaming");
    answer.classList.add("done");
    state.abort = null;
    $("chat-send").disabled = false;
    $("chat-stop").hidden = true;
  }
}

// ---- wiring ------------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("filters").addEventListener("input", renderTable);
  $("filters").addEventListener("reset", () => setTimeout(renderTable));
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  document.querySelectorAll("#catalog th[data-sort]").forEach((th) => th.addEventListener("click", () => {
    const field = th.dataset.sort;
    state.sort = { field, dir: state.sort.field === field ? -state.sort.dir : 1 };
    renderTable();
  }));
  $("card-close").addEventListener("click", () => { history.replaceState(null, "", location.pathname); openFromHash(); });
  window.addEventListener("hashchange", openFromHash);
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("key-input").value);
    load();
  });
  $("chat-form").addEventListener("submit", send);
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat-form").requestSubmit(); }
  });
  $("chat-stop").addEventListener("click", () => state.abort && state.abort.abort());
  $("chat-clear").addEventListener("click", () => { state.history = []; $("chat-log").replaceChildren(); });
  load();
});
