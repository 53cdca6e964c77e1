// Sentinel Stream operator console: one EventSource for the live views, fetch() for mutations.
// Everything shown comes from the JSON API; every string is escaped (DLQ previews and refusal
// reasons are data from the topics, not trusted markup).
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const OUTCOME_COLORS = { ALLOW: "#3b7dd8", REVIEW: "#e0a100", BLOCK: "#c0392b" };
const LATENCY_COLORS = { p50: "#3b7dd8", p95: "#8e44ad", p99: "#c0392b" };
let tokenRequired = false;
let modelsLoaded = false;
let driftSelected = null;

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function num(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
// A latency quantile that fell in the histogram's +Inf bucket reads as its top bound: "≥".
function ms(value, top) {
  return value !== null && value !== undefined && top && value >= top ? `≥${num(value)}` : num(value, 1);
}
function pct(value, digits = 1) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(digits)}%`;
}
function el(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

// ---- token (only when the server says mutations need one) ----------------------------------
function token() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) { sessionStorage.setItem("sentinel-token", fromHash); history.replaceState(null, "", location.pathname); }
  return $("token").value || sessionStorage.getItem("sentinel-token") || "";
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (tokenRequired) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  let payload = {};
  try { payload = await response.json(); } catch (_) { payload = { error: `HTTP ${response.status}` }; }
  return { status: response.status, ok: response.ok, payload };
}

// ---- charts --------------------------------------------------------------------------------
function lineChart(svg, series, keys, colors, { stacked = false } = {}) {
  svg.replaceChildren();
  const W = 600, H = 160, L = 46, B = 18, T = 6;
  el("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" }, svg);
  if (series.length < 2) { el("text", { x: L + 8, y: 60 }, svg).textContent = "waiting for scrapes…"; return; }
  const t0 = series[0].t, t1 = series[series.length - 1].t;
  const values = series.map((p) => {
    let acc = 0;
    return keys.map((k) => { const v = p[k] ?? null; if (!stacked) return v; acc += v || 0; return acc; });
  });
  const max = Math.max(1e-9, ...values.flat().filter((v) => v !== null)) * 1.1;
  const x = (t) => L + ((t - t0) / Math.max(t1 - t0, 1e-9)) * (W - L - 4);
  const y = (v) => H - B - (v / max) * (H - B - T);
  for (const frac of [0, 0.5, 1]) {
    const v = max * frac / 1.1;
    el("line", { x1: L, x2: W, y1: y(v), y2: y(v), class: "axis", "stroke-dasharray": "2,3" }, svg);
    el("text", { x: 2, y: y(v) + 3 }, svg).textContent = num(v, v < 10 ? 1 : 0);
  }
  keys.forEach((key, i) => {
    const points = series.map((p, j) => values[j][i] === null ? null : `${x(p.t).toFixed(1)},${y(values[j][i]).toFixed(1)}`).filter(Boolean);
    if (points.length) el("polyline", { points: points.join(" "), fill: "none", stroke: colors[key], "stroke-width": 1.6 }, svg);
    el("text", { x: L + 6 + i * 70, y: H - 3, fill: colors[key] }, svg).textContent = key;
  });
  el("text", { x: W - 40, y: H - 3 }, svg).textContent = "now";
}

function barChart(svg, bars, { width, height, threshold = null, label = (b) => b.name, fmt = (v) => num(v) }) {
  svg.replaceChildren();
  const L = 40, B = 34, T = 14;
  const max = Math.max(threshold ? threshold * 1.5 : 0, 1e-9, ...bars.map((b) => b.value || 0)) * 1.08;
  const slot = (width - L) / Math.max(bars.length, 1);
  const y = (v) => height - B - (v / max) * (height - B - T);
  el("line", { x1: L, y1: height - B, x2: width, y2: height - B, class: "axis" }, svg);
  for (const frac of [0, 0.5, 1]) {
    const v = max * frac;
    el("text", { x: 2, y: y(v) + 3 }, svg).textContent = fmt(v);
  }
  bars.forEach((b, i) => {
    const h = Math.max((height - B) - y(b.value || 0), b.value > 0 ? 1 : 0);
    const rect = el("rect", { x: L + i * slot + slot * 0.15, y: height - B - h, width: slot * 0.7, height: h, class: b.cls || "bar", fill: b.color }, svg);
    for (const [k, v] of Object.entries(b.data || {})) rect.setAttribute(`data-${k}`, v);
    el("title", {}, rect).textContent = b.title || `${label(b)}: ${fmt(b.value)}`;
    const text = el("text", { x: L + i * slot + slot / 2, y: height - B + 12, "text-anchor": "middle" }, svg);
    text.textContent = label(b);
    if (b.cls && b.cls.includes("drifted")) text.setAttribute("fill", "#c0392b");
  });
  if (threshold !== null) {
    el("line", { x1: L, x2: width, y1: y(threshold), y2: y(threshold), stroke: "#1d2733", "stroke-dasharray": "5,4", "stroke-width": 1 }, svg);
    el("text", { x: width - 96, y: y(threshold) - 3, fill: "#1d2733" }, svg).textContent = `threshold ${threshold}`;
  }
}

function histogram(bins) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 160 36");
  svg.setAttribute("style", "width:160px");
  const max = Math.max(1, ...bins);
  bins.forEach((count, i) => {
    const h = count ? Math.max(1, (Math.log1p(count) / Math.log1p(max)) * 32) : 0;
    el("rect", { x: i * 8, y: 34 - h, width: 7, height: h, fill: i >= bins.length / 2 ? "#c0392b" : "#3b7dd8" }, svg);
  });
  el("title", {}, svg).textContent = "fraud probability 0 → 1 (log count)";
  return svg;
}

// ---- renderers -----------------------------------------------------------------------------
function renderServing(fleet) {
  const s = fleet.state;
  for (const card of document.querySelectorAll("#models-list .card[data-version]")) {
    const variant = s && s.a_version === card.dataset.version ? "A" : s && s.b_version === card.dataset.version ? "B" : null;
    card.querySelector(".serving-badge").textContent = variant ? `serving as ${variant}` : "";
    card.querySelector(".serving-badge").hidden = !variant;
  }
  const text = s ? `A ${s.a_version}${s.b_version ? ` · B ${s.b_version} @ ${s.split_percent}%` : ""} · control offset ${s.applied_offset}` : "no live scorer";
  $("serving").textContent = `${fleet.live} live · ${text}`;
  $("serving").classList.toggle("diverged", fleet.divergent);
}

function renderTraffic(t) {
  $("traffic-rate").textContent = num(t.decisions_per_s.total);
  for (const k of ["ALLOW", "REVIEW", "BLOCK"]) $(`rate-${k}`).textContent = num(t.decisions_per_s[k], t.decisions_per_s[k] < 10 ? 1 : 0);
  for (const k of ["p50", "p95", "p99"]) $(`lat-${k}`).textContent = ms(t.latency_ms[k], t.latency_top_ms);
  $("cache-hit").textContent = pct(t.cache_hit_rate);
  $("batch-size").textContent = num(t.batch_size_mean, 1);
  $("traffic-count").textContent = num(t.decisions_total);
  $("traffic-window").textContent = `rates over the last ${num(t.window_s, 1)} s · consumed ${num(t.consumed_per_s)}/s`;
  lineChart($("chart-rate"), t.series, ["ALLOW", "REVIEW", "BLOCK"], OUTCOME_COLORS, { stacked: true });
  lineChart($("chart-latency"), t.series, ["p50", "p95", "p99"], LATENCY_COLORS);
  const lag = Object.entries(t.lag).map(([p, v]) => ({ name: `p${p}`, value: v, color: "#5b8bd0" }));
  barChart($("chart-lag"), lag, { width: 300, height: 160 });
  const kinds = Object.keys({ ...t.dlq_per_s, ...t.dlq_total });
  $("dlq-rate").innerHTML = kinds.length
    ? kinds.map((k) => `<div><span>${esc(k)}</span><span>${num(t.dlq_per_s[k] ?? 0, 2)}/s · ${num(t.dlq_total[k] ?? 0)} total</span></div>`).join("")
    : '<div class="note">no poison messages</div>';
  $("targets").innerHTML = "scrape targets: " + (t.targets.map((x) =>
    `<span class="${x.up ? "" : "down"}" title="${esc(x.error || "")}">${esc(x.url)} ${x.up ? "up" : "DOWN"}${x.models.length ? ` (${x.models.map((m) => `${esc(m.variant)} ${esc(m.version)} ${esc((m.sha256 || "").slice(0, 10))}`).join(", ")})` : ""}</span>`).join(" · ") || "none");
}

function renderFleet(f) {
  $("fleet-summary").innerHTML = `${f.live} live` + (f.divergent ? ' · <span class="banner">instances diverge</span>' : "");
  $("fleet-table").tBodies[0].innerHTML = f.instances.map((i) => `
    <tr class="${i.diverged ? "diverged" : esc(i.status)}" data-scorer="${esc(i.scorer_id)}">
      <td class="mono">${esc(i.scorer_id)}</td>
      <td><span class="badge ${i.diverged ? "diverged" : esc(i.status)}">${i.diverged ? "DIVERGED" : esc(i.status)}</span></td>
      <td title="sha256 ${esc(i.state.a_sha256)}">${esc(i.state.a_version)} <span class="note mono">${esc((i.state.a_sha256 || "").slice(0, 8))}</span></td>
      <td title="sha256 ${esc(i.state.b_sha256 || "")}">${esc(i.state.b_version || "–")} <span class="note mono">${esc((i.state.b_sha256 || "").slice(0, 8))}</span></td>
      <td>${esc(i.state.split_percent)}%</td><td>${esc(i.state.applied_offset)}</td>
      <td title="${esc(i.last_seen)}">${num(i.age_s, 1)} s ago</td>
      <td class="mono">${Object.entries(i.decisions).map(([k, v]) => `${esc(k)} ${num(v)}`).join("<br>")}</td>
    </tr>`).join("") || '<tr><td colspan="8" class="note">no heartbeats on control-events yet</td></tr>';
}

function renderAb(ab) {
  const s = ab.state;
  $("ab-state").textContent = s ? (s.b_version ? `A ${s.a_version} vs B ${s.b_version}, ${s.split_percent}% of cards on B` : `A ${s.a_version}, no candidate`) : "no live scorer";
  const sample = Object.fromEntries(ab.sample.variants.map((v) => [`${v.variant}/${v.model_version}`, v]));
  const metric = Object.fromEntries(ab.traffic.filter((v) => v.per_s > 0).map((v) => [`${v.variant}/${v.model_version}`, v]));
  const keys = [...new Set([...Object.keys(metric), ...Object.keys(sample)])].sort();
  const body = $("ab-table").tBodies[0];
  body.replaceChildren();
  for (const key of keys) {
    const m = metric[key] || {}, v = sample[key] || {};
    const [variant, version] = key.split("/");
    const row = document.createElement("tr");
    row.dataset.variant = variant;
    row.innerHTML = `<td><b>${esc(variant)}</b></td><td>${esc(version)}</td><td>${num(m.per_s)}</td>
      <td>${pct(m.block_rate ?? v.block_rate, 2)}</td><td class="share-decisions">${pct(v.share_of_decisions)}</td>
      <td class="share-cards">${pct(v.share_of_cards)}</td><td></td>`;
    if (v.score_histogram) row.lastElementChild.appendChild(histogram(v.score_histogram));
    body.appendChild(row);
  }
  if (!keys.length) body.innerHTML = '<tr><td colspan="7" class="note">no decisions yet</td></tr>';
  $("ab-note").textContent = `* from the console's decoded sample of the last 30 s (${num(ab.sample.sampled)} decisions; ${num(ab.sample.decoded)} of ${num(ab.sample.decisions_seen)} read were decoded)`;
}

function renderDrift(d) {
  const select = $("drift-version");
  const versions = d.versions.map((v) => v.model_version);
  const options = d.versions.map((v) => `<option value="${esc(v.model_version)}">${esc(v.model_version)}${v.variant ? ` (serving as ${esc(v.variant)})` : ""}</option>`).join("");
  if (select.dataset.options !== options) {  // rebuild only on change: keeps the user's choice
    select.innerHTML = options;
    select.dataset.options = options;
    if (driftSelected && versions.includes(driftSelected)) select.value = driftSelected;
  }
  const v = d.versions.find((x) => x.model_version === (select.value || versions[0]));
  $("drift-chart").style.display = v ? "" : "none";
  if (!v) { $("drift-summary").textContent = "no snapshots on the drift topic yet"; $("drift-chart").replaceChildren(); $("drift-prediction").textContent = ""; return; }
  const when = (ms) => new Date(ms).toLocaleTimeString();
  $("drift-summary").innerHTML = `${esc(v.model_version)}: ${num(v.count)} rows from ${v.instances.length} instance(s), ${when(v.window_start_ms)}–${when(v.window_end_ms)} · ` +
    (v.count < v.min_count ? `too few rows to judge (< ${v.min_count})` : v.drifted ? `<span class="banner">DRIFTED: ${esc(v.drifted_features.join(", ") || "prediction")}</span>` : "no drift");
  const bars = v.features.map((f) => ({
    name: f.name, value: f.psi ?? 0, color: f.drifted ? "#c0392b" : "#4a79a8", cls: f.drifted ? "bar drifted" : "bar",
    data: { feature: f.name, drifted: f.drifted ? "true" : "false", psi: f.psi ?? "" },
    title: `${f.name}: PSI ${num(f.psi, 4)}, z ${num(f.z, 3)} sd, mean ${num(f.mean, 3)} (baseline ${num(f.baseline_mean, 3)})${f.drifted ? " — DRIFTED" : ""}`,
  }));
  const p = v.prediction;
  bars.push({ name: "score", value: p.psi ?? 0, color: p.drifted ? "#c0392b" : "#7f8c8d", cls: p.drifted ? "bar drifted" : "bar",
    data: { feature: "score", drifted: p.drifted ? "true" : "false" }, title: `prediction PSI ${num(p.psi, 4)}` });
  barChart($("drift-chart"), bars, { width: 1000, height: 230, threshold: v.psi_threshold, fmt: (x) => num(x, 2) });
  $("drift-prediction").textContent = `prediction: mean score ${num(p.mean, 4)} (baseline ${num(p.baseline_mean, 4)}), ${pct(p.share_above_threshold, 2)} at or above the block threshold, PSI ${num(p.psi, 4)}${p.drifted ? " — DRIFTED" : ""}. Flag: PSI ≥ ${v.psi_threshold} or |z| ≥ ${v.z_threshold} sd. z per feature (|z| ≥ 0.1): ` +
    (v.features.filter((f) => Math.abs(f.z ?? 0) >= 0.1).map((f) => `${f.name} ${num(f.z, 2)}`).join(", ") || "none beyond ±0.1 sd");
}

function renderDlq(d) {
  $("dlq-summary").textContent = `${num(d.read)} read from the topic's tail · newest first`;
  $("dlq-kinds").innerHTML = Object.entries(d.by_kind).map(([k, n]) => `<span class="chip" data-kind="${esc(k)}">${esc(k)} × ${num(n)}</span>`).join("") || '<span class="note">empty</span>';
  $("dlq-table").tBodies[0].innerHTML = d.latest.slice(0, 12).map((r) => `
    <tr data-kind="${esc(r.kind)}"><td>${r.failed_at_ms ? esc(new Date(r.failed_at_ms).toLocaleTimeString()) : "–"}</td>
      <td><b>${esc(r.kind)}</b></td><td>${esc(r.reason)}</td>
      <td class="mono">${esc(r.source_topic)}[${esc(r.source_partition)}]@${esc(r.source_offset)}</td>
      <td>${num(r.size)}</td><td class="mono">${esc(r.hex.slice(0, 71))}</td><td class="mono">${esc(r.text.slice(0, 32))}</td></tr>`).join("");
}

function renderLoad(l) {
  const status = $("load-status");
  const bar = $("load-bar");
  if (l.status === "idle") { status.textContent = "idle"; bar.style.width = "0"; return; }
  bar.style.width = `${Math.min(100, (100 * (l.sent || 0)) / Math.max(l.total || 1, 1))}%`;
  const parts = [`<b data-status="${esc(l.status)}" data-run="${esc(l.run)}">run ${esc(l.run)}: ${esc(l.status)}</b>`, `${num(l.sent)} / ${num(l.total)} sent`];
  if (l.replay) parts.push(`replay ${num(l.replay.tx_per_s)} tx/s in ${num(l.replay.seconds, 1)} s (${num(l.replay.malformed)} malformed)`);
  if (l.fleet) parts.push(`fleet: ${num(l.fleet.decisions)} of ${num(l.fleet.expected)} decided, ${num(l.fleet.decisions_per_s)} decisions/s, latency p50 ${ms(l.fleet.latency_ms.p50, l.fleet.latency_top_ms)} · p95 ${ms(l.fleet.latency_ms.p95, l.fleet.latency_top_ms)} · p99 ${ms(l.fleet.latency_ms.p99, l.fleet.latency_top_ms)} ms`);
  if (l.error) parts.push(`<span class="error">${esc(l.error)}</span>`);
  status.innerHTML = parts.join(" · ");
  $("load-start").disabled = ["loading", "running", "settling"].includes(l.status);
}

async function loadModels() {
  const { payload } = await api("GET", "/api/models");
  $("models-dir").textContent = `${payload.models_dir} · current ${payload.current ?? "none"}`;
  const select = $("ab-candidate");
  const previous = select.value;
  select.innerHTML = payload.bundles.filter((b) => !b.error).map((b) => {
    const t = b.metrics.test || {};
    return `<option value="${esc(b.version)}">${esc(b.version)} — PR-AUC ${num(t.pr_auc, 3)}, precision ${pct(t.precision_at_block)}, recall ${pct(t.recall_at_block)}${b.active ? " (models/current)" : ""}</option>`;
  }).join("");
  if (previous) select.value = previous;
  $("models-list").innerHTML = payload.bundles.map((b) => {
    if (b.error) return `<div class="card"><h3>${esc(b.version)}</h3><span class="error">${esc(b.error)}</span></div>`;
    const t = b.metrics.test || {}, v = b.metrics.validation || {};
    const plots = b.plots.map((p) => { const url = `/api/models/${encodeURIComponent(b.version)}/files/${encodeURIComponent(p)}`; return `<a href="${url}" target="_blank"><img src="${url}" alt="${esc(p)}" title="${esc(p)}"></a>`; }).join("");
    return `<div class="card" data-version="${esc(b.version)}"><h3>${esc(b.version)} ${b.active ? '<span class="badge ok">models/current</span>' : ""} <span class="badge live serving-badge" hidden></span></h3>
      <dl><dt>test PR-AUC / ROC-AUC</dt><dd>${num(t.pr_auc, 4)} / ${num(t.roc_auc, 4)} (validation ${num(v.pr_auc, 4)})</dd>
      <dt>at block threshold</dt><dd>precision ${pct(t.precision_at_block)}, recall ${pct(t.recall_at_block)}</dd>
      <dt>thresholds</dt><dd>block ${num(b.thresholds.block, 4)}, review ${num(b.thresholds.review, 4)}</dd>
      <dt>ONNX parity</dt><dd>max |Δ| ${b.parity ? Number(b.parity.max_abs_diff).toExponential(2) : "–"} (bound ${b.parity ? esc(b.parity.bound) : "–"}, ${b.parity ? num(b.parity.rows) : "–"} rows)</dd>
      <dt>data</dt><dd>${b.data ? `${esc(b.data.source)}, ${num(b.data.rows)} rows, ${num(b.data.frauds)} frauds, sha256 ${esc((b.data.sha256 || "").slice(0, 16))}…` : "–"}</dd>
      <dt>model sha256</dt><dd class="mono">${esc(b.model_sha256)}</dd><dt>created</dt><dd>${esc(b.created_at)}</dd></dl>
      <div class="plots">${plots}</div></div>`;
  }).join("") || '<div class="note">no bundles</div>';
  modelsLoaded = true;
}

// ---- actions -------------------------------------------------------------------------------
function showOutcome(name, res) {
  const box = $("ab-result");
  const p = res.payload;
  if (!res.ok && !p.results) { box.innerHTML = `<span class="error" data-outcome="error">${esc(name)}: ${esc(p.error || `HTTP ${res.status}`)}</span>`; return; }
  const diverging = (p.diverging || []).map((line) => `<div class="error">DIVERGENCE: ${esc(line)}</div>`).join("");
  const activated = p.models_current_now ? `<div class="note">models/current → ${esc(p.models_current_now)}</div>` : "";
  const head = p.applied_by_all
    ? `<span class="fine" data-outcome="ok">${esc(name)} applied by every live instance (control offset ${esc(p.offset)})</span>`
    : `<span class="error" data-outcome="${p.published ? "partial" : "error"}">${esc(name)}: ${esc(p.error || (p.published ? "not applied by every instance" : "nothing published"))}</span>`;
  box.innerHTML = head + diverging + activated + `<table class="acks"><tbody>${(p.results || []).map((r) => `
    <tr data-scorer="${esc(r.scorer_id)}" data-result="${esc(r.result)}"><td class="mono">${esc(r.scorer_id)}</td>
    <td><span class="badge ${esc(String(r.result).replace(" ", "-"))}">${esc(r.result)}</span></td><td>${esc(r.reason || "")}</td>
    <td>${r.state ? `A ${esc(r.state.a_version)} · B ${esc(r.state.b_version || "–")} · ${esc(r.state.split_percent)}%` : ""}</td></tr>`).join("")}</tbody></table>`;
}

async function command(name, path, body, button) {
  button.disabled = true;
  $("ab-result").innerHTML = `<span class="note">${esc(name)}: publishing and waiting for acks…</span>`;
  try { showOutcome(name, await api("POST", path, body)); await loadModels(); }
  catch (err) { $("ab-result").innerHTML = `<span class="error">${esc(name)}: ${esc(err)}</span>`; }
  finally { button.disabled = false; }
}

$("ab-setup-btn").addEventListener("click", (e) => command("ab_setup", "/api/ab/setup", { candidate_version: $("ab-candidate").value }, e.target));
$("ab-split-btn").addEventListener("click", (e) => {
  const value = Number($("ab-split-input").value);
  command("ab_split", "/api/ab/split", { percent: Number.isInteger(value) ? value : $("ab-split-input").value }, e.target);
});
$("ab-promote-btn").addEventListener("click", (e) => command("promote", "/api/ab/promote", {}, e.target));
$("ab-abort-btn").addEventListener("click", (e) => command("abort", "/api/ab/abort", {}, e.target));
$("reload-btn").addEventListener("click", (e) => command("reload", "/api/reload", {}, e.target));
$("drift-version").addEventListener("change", (e) => { driftSelected = e.target.value; });
$("load-start").addEventListener("click", async () => {
  const body = { count: Number($("load-count").value), rate: Number($("load-rate").value), bad_fraction: Number($("load-bad").value) };
  if ($("load-drift").value.trim()) body.drift = $("load-drift").value.trim();
  const res = await api("POST", "/api/load", body);
  if (!res.ok) $("load-status").innerHTML = `<span class="error" data-status="error">${esc(res.payload.error)}</span>`;
  else renderLoad(res.payload);
});

// ---- live updates --------------------------------------------------------------------------
function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => $("conn").classList.add("up"));
  source.addEventListener("error", () => $("conn").classList.remove("up"));
  source.addEventListener("snapshot", (event) => {
    const s = JSON.parse(event.data);
    renderServing(s.fleet);
    renderTraffic(s.traffic);
    renderFleet(s.fleet);
    renderAb(s.ab);
    renderDrift(s.drift);
    renderDlq(s.dlq);
    renderLoad(s.load);
    document.body.dataset.updated = String(Date.now());
  });
}

(async function start() {
  const { payload } = await api("GET", "/api/health");
  tokenRequired = Boolean(payload.mutations_need_token);
  $("token-box").hidden = !tokenRequired;
  token();
  await loadModels();
  setInterval(loadModels, 30000);
  connect();
})();
