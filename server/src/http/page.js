// The fleet page: polls /api/fleet once a second and redraws. Every string
// that came from a device goes into a text node (textContent), never into
// markup: device reports are attacker-controlled on a hostile LAN.
"use strict";

const GOOD = ["done", "activated", "confirmed"];
const BAD = ["refused", "failed", "stalled", "rolled-back"];
const STUCK_MS = 10000;
let filter = "all";
// The device whose history is shown; the URL's #fragment names it, so a
// link (or a test) can open the page on one device.
let selected = decodeURIComponent(location.hash.slice(1)) || null;
let last = null;
let lastHistory = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function kind(d, now) {
  if (GOOD.includes(d.state)) return "good";
  if (BAD.includes(d.state)) return "bad";
  return now - d.last_ms > STUCK_MS ? "stuck" : "busy";
}

function when(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

function ago(ms, now) {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  return s + " s ago";
}

function renderTotals(f) {
  const box = document.getElementById("totals");
  box.replaceChildren();
  const tile = (label, n, key) => {
    const t = el("div", undefined, "tile");
    t.dataset.state = key;
    t.append(el("span", n, "n"), el("span", label));
    box.append(t);
  };
  tile("devices", f.devices.length, "devices");
  for (const [state, n] of Object.entries(f.states)) tile(state, n, state);
  tile("reports", f.reports, "reports");
}

function renderPlot(f) {
  const svg = document.getElementById("plot");
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const pts = f.samples;
  if (pts.length < 1) return;
  const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
  const ymax = Math.max(1, ...pts.map(p => p[3]));
  const x = t => 30 + (t - t0) / (t1 - t0) * 560;
  const y = v => 150 - v / ymax * 140;
  const axis = document.createElementNS(ns, "path");
  axis.setAttribute("d", "M30 10 V150 H590");
  axis.setAttribute("stroke", "#999");
  axis.setAttribute("fill", "none");
  svg.append(axis);
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "16");
  label.setAttribute("font-size", "11");
  label.textContent = String(ymax);
  svg.append(label);
  const span = document.createElementNS(ns, "text");
  span.setAttribute("x", "590");
  span.setAttribute("y", "158");
  span.setAttribute("font-size", "10");
  span.setAttribute("text-anchor", "end");
  span.textContent = Math.round((t1 - t0) / 1000) + " s";
  svg.append(span);
  [[3, "#888"], [2, "#c0392b"], [1, "#2a8a3a"]].forEach(([i, colour]) => {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.map(p => x(p[0]).toFixed(1) + "," + y(p[i]).toFixed(1)).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colour);
    line.setAttribute("stroke-width", "2");
    line.dataset.series = ["", "done", "failed", "seen"][i];
    svg.append(line);
  });
}

function renderDevices(f) {
  const body = document.querySelector("#devices tbody");
  body.replaceChildren();
  const order = { bad: 0, stuck: 1, busy: 2, good: 3 };
  const rows = f.devices
    .map(d => [kind(d, f.now_ms), d])
    .filter(([k]) => filter === "all" || (filter === "failed" && k === "bad") ||
      (filter === "stuck" && k === "stuck") || (filter === "done" && k === "good"))
    .sort((a, b) => order[a[0]] - order[b[0]] || a[1].device.localeCompare(b[1].device));
  for (const [k, d] of rows) {
    const tr = el("tr", undefined, k);
    tr.dataset.device = d.device;
    tr.dataset.state = d.state;
    if (d.device === selected) tr.classList.add("selected");
    tr.append(el("td", d.device), el("td", d.addr), el("td", d.state, "state"),
      el("td", d.blocks_done + "/" + d.blocks_total), el("td", d.version),
      el("td", d.reason === "none" ? "" : d.reason), el("td", ago(d.last_ms, f.now_ms)));
    tr.addEventListener("click", () => {
      selected = d.device;
      location.hash = d.device;
      poll(false);
    });
    body.append(tr);
  }
}

function renderHistory(history) {
  const box = document.getElementById("history");
  box.hidden = !history;
  if (!history) return;
  document.getElementById("history-device").textContent = selected;
  const body = box.querySelector("tbody");
  body.replaceChildren();
  for (const h of history) {
    const tr = el("tr");
    tr.append(el("td", when(h.at_ms)), el("td", h.state), el("td", h.blocks_done),
      el("td", h.reason === "none" ? "" : h.reason));
    body.append(tr);
  }
}

function draw() {
  const f = last;
  if (!f) return;
  document.getElementById("rollout").textContent =
    "firmcast " + f.tool + (f.image_id ? " — image " + f.image_id : "") + (f.what ? " (" + f.what + ")" : "");
  const up = document.getElementById("updated");
  const left = f.evicted + f.not_shown;
  up.textContent = "updated " + when(f.now_ms) + " UTC" +
    (left ? " — page full: " + left + " devices or reports not shown (the record keeps all)" : "");
  up.dataset.state = "live";
  renderTotals(f);
  renderPlot(f);
  renderDevices(f);
  renderHistory(lastHistory);
}

async function poll(again = true) {
  try {
    const r = await fetch("/api/fleet", { cache: "no-store" });
    if (r.ok) { last = await r.json(); }
    lastHistory = null;
    if (selected && last && last.devices.some(d => d.device === selected)) {
      const h = await fetch("/api/history?device=" + encodeURIComponent(selected), { cache: "no-store" });
      if (h.ok) lastHistory = await h.json();
    }
    draw();
  } catch (e) {
    const up = document.getElementById("updated");
    up.textContent = "connection lost; retrying";
    up.dataset.state = "offline";
  }
  if (again) setTimeout(poll, 1000);
}

for (const b of document.querySelectorAll("#filters button")) {
  b.addEventListener("click", () => {
    filter = b.dataset.filter;
    for (const o of document.querySelectorAll("#filters button")) o.classList.toggle("on", o === b);
    draw();
  });
}
poll();
