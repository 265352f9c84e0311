// The dashboard's page: polls /api/dashboard and draws its sections. Plots are plain SVG (no
// library, no CDN: it runs offline); every text from the tables goes in as textContent, never
// as HTML (a file name is whatever the uploader chose).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = Number(document.body.dataset.refreshMs) || 5000;
const W = 400, H = 150, LEFT = 38, RIGHT = 6, TOP = 8, BOTTOM = 18;
const COLOURS = ["#4a90d9", "#e07b00", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
}

function number(v, digits = 0) {
  return v === null || v === undefined ? "-" : Number(v).toFixed(digits);
}

// One chart: bars or lines over the window's buckets, y from 0 to the largest value.
function chart(target, times, series, { bars = false, max = null, format = (v) => number(v) }) {
  const box = document.getElementById(target);
  box.replaceChildren();
  const values = series.flatMap((s) => s.values.filter((v) => v !== null));
  if (!values.length) {
    box.append(el("div", { class: "empty" }, "no photos in the window"));
    return;
  }
  const top = max ?? Math.max(...values, 1e-9);
  const n = times.length;
  const x = (i) => LEFT + ((W - LEFT - RIGHT) * (i + 0.5)) / n;
  const y = (v) => TOP + (H - TOP - BOTTOM) * (1 - v / top);
  const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  svg.append(svgEl("line", { class: "axis", x1: LEFT, y1: H - BOTTOM, x2: W - RIGHT, y2: H - BOTTOM }));
  svg.append(svgEl("line", { class: "axis", x1: LEFT, y1: TOP, x2: LEFT, y2: H - BOTTOM }));
  svg.append(svgEl("text", { class: "label", x: 2, y: TOP + 8 }, format(top)));
  svg.append(svgEl("text", { class: "label", x: 2, y: H - BOTTOM }, format(0)));
  svg.append(svgEl("text", { class: "label", x: LEFT, y: H - 4 }, clock(times[0])));
  svg.append(svgEl("text", { class: "label", x: W - RIGHT, y: H - 4, "text-anchor": "end" }, clock(times[n - 1])));
  const width = Math.max(1, (W - LEFT - RIGHT) / n - 1);
  for (const s of series) {
    if (bars) {
      s.values.forEach((v, i) => {
        if (!v) return;
        const bar = svgEl("rect", { class: `bar point ${s.cls}`, x: x(i) - width / 2, y: y(v), width, height: H - BOTTOM - y(v) });
        bar.append(svgEl("title", {}, `${clock(times[i])}: ${format(v)}`));
        svg.append(bar);
      });
      continue;
    }
    // A line through the buckets that have a value; a gap where the stream had no photo.
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null) { d += " "; return; }
      d += `${d.endsWith(" ") || !d ? "M" : "L"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      const dot = svgEl("circle", { class: `point ${s.cls}`, cx: x(i), cy: y(v), r: s.r ?? 1.8 });
      dot.append(svgEl("title", {}, `${clock(times[i])}: ${format(v)}`));
      svg.append(dot);
    });
    svg.prepend(svgEl("path", { class: `line ${s.cls}`, d: d.trim() }));
  }
  box.append(svg);
}

function summary(data) {
  const s = data.summary;
  const tiles = [
    ["photos", `${s.photos}`, `last ${number(data.window.hours, 1)} h`],
    ["unknown", s.unknown_share === null ? "-" : `${(100 * s.unknown_share).toFixed(1)}%`, `${s.unknown} answered unknown`],
    ["quarantined", `${s.quarantined}`, "in the window"],
    ["champion", s.champion === null ? "none" : `v${s.champion}`, "serving model (registry)"],
    ["rows", `${s.predictions_rows}`, `predictions; ${s.quarantine_rows} quarantined`],
    ["last answer", s.last_prediction_at ? new Date(s.last_prediction_at).toLocaleTimeString() : "-", s.last_prediction_at ? new Date(s.last_prediction_at).toLocaleDateString() : "no prediction yet"],
  ];
  document.getElementById("summary").replaceChildren(
    ...tiles.map(([name, value, note]) => {
      const tile = el("div", { class: "tile", id: `tile-${name.replace(" ", "-")}`, title: note });
      tile.append(el("div", { class: "value" }, value), el("div", { class: "name" }, `${name}: ${note}`));
      return tile;
    })
  );
}

function table(id, head, rows) {
  const node = document.getElementById(id);
  node.replaceChildren();
  const tr = el("tr");
  head.forEach((h) => tr.append(el("th", {}, h)));
  node.append(tr);
  for (const row of rows) {
    const line = el("tr");
    row.forEach((cell) => line.append(el("td", {}, cell === null || cell === undefined ? "-" : String(cell))));
    node.append(line);
  }
}

function timeline(data) {
  const models = data.models;
  const box = document.getElementById("timeline");
  box.replaceChildren();
  const start = Date.parse(data.window.start), end = Date.parse(data.window.end);
  const colour = (v) => COLOURS[(v ?? 0) % COLOURS.length];
  // Drawn at its own width (no stretching), scaled as a whole to the panel.
  const TW = 1200, TL = 60, TR = 10;
  const svg = svgEl("svg", { class: "timeline", viewBox: `0 0 ${TW} 46` });
  const x = (t) => TL + ((TW - TL - TR) * (t - start)) / Math.max(1, end - start);
  svg.append(svgEl("text", { class: "label", x: 2, y: 20 }, "served"));
  for (const seg of models.segments) {
    const a = x(Date.parse(seg.from)), b = x(Date.parse(seg.to));
    const rect = svgEl("rect", { class: "segment point", x: a, y: 6, width: Math.max(3, b - a), height: 22, fill: colour(seg.version), "data-version": seg.version });
    rect.append(svgEl("title", {}, `v${seg.version}: ${clock(seg.from)}-${clock(seg.to)}, ${seg.photos} photos`));
    svg.append(rect);
    if (b - a > 30) svg.append(svgEl("text", { class: "label", x: a + 4, y: 21, style: "fill:#fff" }, `v${seg.version}`));
  }
  svg.append(svgEl("text", { class: "label", x: TL, y: 42 }, clock(data.window.start)));
  svg.append(svgEl("text", { class: "label", x: TW - TR, y: 42, "text-anchor": "end" }, clock(data.window.end)));
  box.append(svg);
  const served = Object.fromEntries(models.served.map((s) => [s.version, s]));
  table("registry", ["version", "registered", "aliases", "classifier", "test accuracy", "served in the window"],
    models.registry.map((v) => [
      `v${v.version}`,
      v.created_at ? new Date(v.created_at).toLocaleString() : null,
      v.aliases.join(", "),
      v.classifier,
      v.accuracy_test === null ? null : number(v.accuracy_test, 4),
      served[v.version] ? `${clock(served[v.version].first)}-${clock(served[v.version].last)} (${served[v.version].photos} photos)` : "",
    ]));
  document.querySelectorAll("#registry tr").forEach((tr) => {
    if (tr.firstChild.textContent === `v${models.champion}`) tr.classList.add("champion");
  });
}

let shownPhotos = "";

function photos(data) {
  // Rebuilt only when the newest answers change: no flicker of the thumbnails at each poll.
  const key = JSON.stringify(data.photos);
  if (key === shownPhotos) return;
  shownPhotos = key;
  const box = document.getElementById("photos");
  const cards = data.photos.map((p) => {
    const card = el("figure", { class: `photo${p.is_unknown ? " unknown" : ""}` });
    const img = el("img", { src: p.thumbnail, alt: p.path, title: p.path });
    // The answer at two levels (fruits/model/answers.py), as status says it.
    const answer = p.is_unknown
      ? `unknown (best guess ${p.label})`
      : p.variety_not_sure && p.kind
        ? `a ${p.kind}, variety not sure (best guess ${p.label})`
        : p.label;
    const caption = el("figcaption");
    caption.append(
      el("div", { class: "label" }, answer),
      el("div", { class: "meta" }, `confidence ${number(p.confidence, 2)} · v${p.model_version ?? "-"}`),
      el("div", { class: "meta" }, `${new Date(p.predicted_at).toLocaleTimeString()} · ${number(p.latency_ms)} ms`)
    );
    card.append(img, caption);
    return card;
  });
  if (!cards.length) cards.push(el("div", { class: "empty" }, "no predictions yet"));
  box.replaceChildren(...cards);
}

function quarantine(data) {
  const q = data.quarantine;
  table("reasons", ["reason (window)", "photos"], Object.entries(q.reasons));
  table("quarantined", ["newest quarantined", "reason", "detail", "path"],
    q.newest.map((r) => [new Date(r.detected_at).toLocaleString(), r.reason, r.detail, r.path]));
}

// The serving version's answers of the health window against its validation answers: the two
// distances `fruits status --check` judges, and both confidence histograms side by side.
function drift(data) {
  const box = document.getElementById("drift");
  box.replaceChildren();
  const d = data.drift;
  if (!d) {
    box.append(el("div", { class: "empty" }, "nothing to compare: no answers in the health window, or no validation answers in the serving version's report"));
    return;
  }
  const over = d.confidence_drift > d.max_confidence_drift || (d.max_answer_drift !== null && d.answer_drift > d.max_answer_drift);
  const limit = d.max_answer_drift === null ? "not checked" : `limit ${number(d.max_answer_drift, 2)}`;
  box.append(el("div", { id: "drift-figures", class: over ? "drifted" : "" },
    `model v${d.model_version}, ${d.n_live} answers in the last ${d.window} against ${d.n_reference} on validation: ` +
    `confidence distance ${number(d.confidence_drift, 2)} (limit ${number(d.max_confidence_drift, 2)}), ` +
    `answers ${number(d.answer_drift, 2)} (${limit}); unknown ${number(100 * d.unknown_share_live, 0)}% ` +
    `(validation ${number(100 * d.unknown_share_reference, 0)}%)`));
  const bins = d.confidence_reference.length;
  const top = Math.max(...d.confidence_reference, ...d.confidence_live, 1e-9);
  const slot = (W - LEFT - RIGHT) / bins, width = slot / 2 - 1;
  const y = (v) => TOP + (H - TOP - BOTTOM) * (1 - v / top);
  const svg = svgEl("svg", { class: "chart drift", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  svg.append(svgEl("line", { class: "axis", x1: LEFT, y1: H - BOTTOM, x2: W - RIGHT, y2: H - BOTTOM }));
  svg.append(svgEl("text", { class: "label", x: 2, y: TOP + 8 }, `${Math.round(100 * top)}%`));
  svg.append(svgEl("text", { class: "label", x: LEFT, y: H - 4 }, "top probability 0"));
  svg.append(svgEl("text", { class: "label", x: W - RIGHT, y: H - 4, "text-anchor": "end" }, "1"));
  [["reference", d.confidence_reference, 0], ["live", d.confidence_live, 1]].forEach(([cls, values, k]) => {
    values.forEach((v, i) => {
      const bar = svgEl("rect", { class: `bar point ${cls}`, x: LEFT + i * slot + k * (width + 1), y: y(v), width, height: H - BOTTOM - y(v) });
      bar.append(svgEl("title", {}, `${cls}, ${(i / bins).toFixed(1)}-${((i + 1) / bins).toFixed(1)}: ${(100 * v).toFixed(1)}%`));
      svg.append(bar);
    });
  });
  const legend = el("div", { class: "legend" });
  legend.append(el("span", { class: "reference" }, "validation"), el("span", { class: "live" }, "live"));
  box.append(svg, legend);
}

function render(data) {
  const s = data.series;
  summary(data);
  chart("plot-photos", s.start, [{ values: s.photos_per_minute, cls: "photos" }], { bars: true, format: (v) => number(v, 1) });
  chart("plot-latency", s.start, [
    { values: s.latency_p95_ms, cls: "p95", r: 2.6 },
    { values: s.latency_p50_ms, cls: "p50" },
  ], {});
  chart("plot-unknown", s.start, [{ values: s.unknown_share, cls: "share" }], { max: 1, format: (v) => `${Math.round(100 * v)}%` });
  drift(data);
  timeline(data);
  photos(data);
  quarantine(data);
}

async function refresh() {
  const status = document.getElementById("status");
  const began = performance.now();
  try {
    const response = await fetch("/api/dashboard", { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const data = await response.json();
    render(data);
    status.className = "status";
    status.textContent = `updated ${new Date().toLocaleTimeString()} (${Math.round(performance.now() - began)} ms; every ${REFRESH_MS / 1000} s)`;
    document.body.dataset.updated = String(Date.now());
  } catch (err) {
    // The last figures stay on the page; the next poll tries again.
    status.className = "status error";
    status.textContent = `not updated: ${err.message} (retrying every ${REFRESH_MS / 1000} s)`;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
