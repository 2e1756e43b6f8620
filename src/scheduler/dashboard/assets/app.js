// The Zask dashboard: renders the scheduler's snapshot (the JSON of /api/status), pushed by
// /events every half second (polling /api/status when server-sent events are not available).
// Every text from the cluster (keys, names, log lines) goes in through textContent, never as
// HTML.
"use strict";

const STREAM_WINDOW_MS = 30000;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

// A colour per task prefix: the next of a palette of distinct hues in the order prefixes are
// first seen, so it stays the same while the page is open.
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const colours = new Map();
function colour(prefix) {
  if (!colours.has(prefix)) {
    const i = colours.size;
    colours.set(prefix, i < PALETTE.length ? PALETTE[i]
      : "hsl(" + ((i * 137.508) % 360) + ", 60%, 45%)");
  }
  return colours.get(prefix);
}

function bar(parts) {
  const b = el("div", undefined, "bar");
  let left = 0;
  for (const [cls, fraction] of parts) {
    const s = el("span", undefined, cls);
    s.style.left = (left * 100) + "%";
    s.style.width = (Math.max(0, fraction) * 100) + "%";
    left += fraction;
    b.appendChild(s);
  }
  return b;
}

function numCell(value) {
  return el("td", String(value), "num");
}

function renderFigures(s) {
  const set = (id, v) => { document.getElementById(id).textContent = v; };
  set("fig-workers", s.workers.length);
  set("fig-threads", s.workers.reduce((a, w) => a + w.nthreads, 0));
  set("fig-tasks", s.tasks.total);
  set("fig-processing", s.tasks.processing);
  set("fig-memory", s.tasks.memory);
  set("fig-bytes", bytes(s.workers.reduce((a, w) => a + w.nbytes, 0)));
  set("fig-rate", Math.round(s.messages_per_second));
  set("fig-clients", s.clients);
  set("fig-uptime", duration(s.now_ms));
}

function renderWorkers(s) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren();
  for (const w of s.workers) {
    const tr = el("tr");
    tr.dataset.address = w.address;
    tr.appendChild(el("td", w.address + (w.retiring ? " (retiring)" : "")));
    tr.appendChild(el("td", w.name));
    tr.appendChild(numCell(w.nthreads));
    const mem = el("td");
    const limit = w.memory_limit_bytes;
    mem.appendChild(bar([["mem", limit ? w.nbytes / limit : 0]]));
    mem.appendChild(el("small", bytes(w.nbytes) + " / " + (limit ? bytes(limit) : "no limit")));
    tr.appendChild(mem);
    const keys = numCell(w.keys); keys.classList.add("n-keys"); tr.appendChild(keys);
    // A worker runs the oldest `nthreads` of the tasks it was given; the rest wait there.
    const runs = Math.min(w.processing, w.nthreads);
    const running = numCell(runs); running.classList.add("n-running"); tr.appendChild(running);
    const queued = numCell(w.processing - runs); queued.classList.add("n-queued");
    tr.appendChild(queued);
    body.appendChild(tr);
  }
}

function renderProgress(s) {
  const body = document.querySelector("#progress tbody");
  body.replaceChildren();
  for (const p of s.prefixes) {
    const total = p.done + p.erred + p.pending;
    const tr = el("tr");
    tr.dataset.prefix = p.prefix;
    const name = el("td");
    const swatch = el("i"); swatch.style.background = colour(p.prefix);
    swatch.style.display = "inline-block"; swatch.style.width = "0.8em";
    swatch.style.height = "0.8em"; swatch.style.marginRight = "0.3em";
    name.appendChild(swatch); name.appendChild(document.createTextNode(p.prefix));
    tr.appendChild(name);
    const cell = el("td", undefined, "bar-cell");
    cell.appendChild(bar([["done", total ? p.done / total : 0],
                          ["erred", total ? p.erred / total : 0]]));
    tr.appendChild(cell);
    // Cells named n-*: the bar's own spans are .done and .erred.
    const done = numCell(p.done); done.classList.add("n-done"); tr.appendChild(done);
    const tot = numCell(total); tot.classList.add("n-total"); tr.appendChild(tot);
    const erred = numCell(p.erred); erred.classList.add("n-erred"); tr.appendChild(erred);
    const pending = numCell(p.pending); pending.classList.add("n-pending");
    tr.appendChild(pending);
    body.appendChild(tr);
  }
}

function renderStream(s) {
  const canvas = document.getElementById("stream");
  const width = canvas.clientWidth || canvas.width;
  canvas.width = width;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  // The last STREAM_WINDOW_MS at most, zoomed in to the runs shown (2 s at least).
  const recent = s.task_stream.filter((r) => r.end_ms >= s.now_ms - STREAM_WINDOW_MS);
  // One lane per worker, split in one row per thread; runs gone workers made get a lane too.
  const threads = new Map();
  for (const w of s.workers) threads.set(w.address, Math.max(1, w.nthreads));
  for (const r of recent) if (!threads.has(r.worker)) threads.set(r.worker, 1);
  const firstRow = new Map();
  let rows = 0;
  for (const [address, n] of threads) { firstRow.set(address, rows); rows += n; }
  const axis = 14, label = 170;
  const rowHeight = Math.max(3, Math.min(24, (canvas.height - axis) / Math.max(1, rows)));
  const earliest = recent.reduce((m, r) => Math.min(m, r.start_ms), s.now_ms);
  const span = Math.max(2000, (s.now_ms - earliest) * 1.05);
  const from = s.now_ms - span;
  const x = (t) => label + ((t - from) / span) * (canvas.width - label);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#555";
  for (const [address, row] of firstRow) {
    ctx.fillText(address.replace("tcp://", ""), 4, row * rowHeight + Math.min(rowHeight, 12));
    ctx.fillRect(0, row * rowHeight, canvas.width, 0.5);
  }
  ctx.fillText("-" + (span / 1000).toFixed(1) + " s", label, canvas.height - 2);
  ctx.fillText("now", canvas.width - 24, canvas.height - 2);
  // Each run on the first of its worker's rows that is free by its start.
  const free = new Map();
  const seen = new Set();
  for (const run of [...recent].sort((a, b) => a.start_ms - b.start_ms)) {
    const n = threads.get(run.worker);
    if (!free.has(run.worker)) free.set(run.worker, new Array(n).fill(-Infinity));
    const ends = free.get(run.worker);
    let i = ends.findIndex((end) => end <= run.start_ms);
    if (i < 0) i = ends.indexOf(Math.min(...ends));
    ends[i] = run.end_ms;
    const y = (firstRow.get(run.worker) + i) * rowHeight;
    ctx.fillStyle = colour(run.prefix);
    const x0 = Math.max(label, x(run.start_ms));
    ctx.fillRect(x0, y + 1, Math.max(2, x(run.end_ms) - x0 - 1), Math.max(1, rowHeight - 2));
    seen.add(run.prefix);
  }
  const legend = document.getElementById("stream-legend");
  legend.replaceChildren();
  for (const prefix of [...seen].sort()) {
    const item = el("span");
    const swatch = el("i"); swatch.style.background = colour(prefix);
    item.appendChild(swatch); item.appendChild(document.createTextNode(prefix));
    legend.appendChild(item);
  }
}

function renderEvents(s) {
  const list = document.getElementById("events");
  list.replaceChildren();
  for (const e of (s.events || []).slice(-50).reverse()) {
    list.appendChild(el("li", typeof e === "string" ? e : JSON.stringify(e)));
  }
  const logs = document.getElementById("logs");
  const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
  logs.textContent = (s.logs || []).join("\n");
  if (atBottom) logs.scrollTop = logs.scrollHeight;
}

function render(s) {
  renderFigures(s);
  renderWorkers(s);
  renderProgress(s);
  renderStream(s);
  renderEvents(s);
}

function connected(live) {
  const c = document.getElementById("connection");
  c.textContent = live ? "live" : "reconnecting…";
  c.className = "state " + (live ? "live" : "lost");
}

function poll() {
  fetch("api/status", { credentials: "same-origin" })
    .then((r) => r.json())
    .then((s) => { connected(true); render(s); })
    .catch(() => connected(false))
    .finally(() => setTimeout(poll, 1000));
}

if (window.EventSource) {
  const source = new EventSource("events");
  source.onmessage = (m) => { connected(true); render(JSON.parse(m.data)); };
  source.onerror = () => connected(false);
} else {
  poll();
}
