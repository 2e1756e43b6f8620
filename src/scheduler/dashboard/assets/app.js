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

// A stable colour per task prefix.
function colour(prefix) {
  let h = 0;
  for (let i = 0; i < prefix.length; i++) h = (h * 31 + prefix.charCodeAt(i)) >>> 0;
  return "hsl(" + (h % 360) + ", 65%, 50%)";
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
    const keys = numCell(w.keys); keys.classList.add("keys"); tr.appendChild(keys);
    const running = numCell(w.processing); running.classList.add("processing");
    tr.appendChild(running);
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
    const done = numCell(p.done); done.classList.add("done"); tr.appendChild(done);
    const tot = numCell(total); tot.classList.add("total"); tr.appendChild(tot);
    const erred = numCell(p.erred); erred.classList.add("erred"); tr.appendChild(erred);
    const pending = numCell(p.pending); pending.classList.add("pending"); tr.appendChild(pending);
    body.appendChild(tr);
  }
}

function renderStream(s) {
  const canvas = document.getElementById("stream");
  const width = canvas.clientWidth || canvas.width;
  canvas.width = width;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const lanes = new Map();
  s.workers.forEach((w, i) => lanes.set(w.address, i));
  for (const run of s.task_stream) {
    if (!lanes.has(run.worker)) lanes.set(run.worker, lanes.size);
  }
  const laneHeight = Math.max(6, Math.min(30, canvas.height / Math.max(1, lanes.size)));
  const from = s.now_ms - STREAM_WINDOW_MS;
  const x = (t) => ((t - from) / STREAM_WINDOW_MS) * canvas.width;
  const seen = new Set();
  for (const run of s.task_stream) {
    if (run.end_ms < from) continue;
    const lane = lanes.get(run.worker);
    ctx.fillStyle = colour(run.prefix);
    const x0 = Math.max(0, x(run.start_ms));
    ctx.fillRect(x0, lane * laneHeight + 1, Math.max(1, x(run.end_ms) - x0), laneHeight - 2);
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
