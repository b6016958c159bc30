// infaas dashboard: reads the JSON API and /metrics every 1.5 s; keeps its short history in the page.
"use strict";

const CONTROL_KINDS = ["load", "unload", "replicate", "grow", "shrink", "upgrade", "downgrade", "add_worker", "remove_worker",
  "blocked", "reconcile", "job", "error", "profile", "register", "remove", "leader"];
const PERIOD_MS = 1500;
const WINDOW_S = 300;  // shed and failed requests: over the last 5 minutes
const state = { key: sessionStorage.getItem("infaas-key") || "", counts: [], live: {}, tasks: [], busy: false };

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}
const fmt = (x, digits = 1) => (x === null || x === undefined || Number.isNaN(x) ? "-" : Number(x).toFixed(digits));
const when = (t) => new Date(t * 1000).toLocaleTimeString();

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.key) headers.Authorization = "Bearer " + state.key;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) throw new Unauthorized(path);
  const text = await response.text();
  if (!response.ok) {
    let message = text;
    try { message = JSON.parse(text).error || text; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${message}`);
  }
  return path === "/metrics" ? text : JSON.parse(text);
}

// ---- /metrics: requests by variant and code, kept for WINDOW_S ---------------------------------------
function requestCounts(text) {
  const counts = {};
  const line = /^infaas_requests_total\{([^}]*)\}\s+([0-9.eE+-]+)/;
  for (const row of text.split("\n")) {
    const m = line.exec(row);
    if (!m) continue;
    const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    const v = labels.variant || "-";
    const c = (counts[v] = counts[v] || { shed: 0, failed: 0 });
    const n = Number(m[2]);
    if (labels.code === "429" || labels.code === "503") c.shed += n;
    else if (labels.code !== "200") c.failed += n;
  }
  return counts;
}

function recentFailures(now) {
  state.counts = state.counts.filter((s) => now - s.t <= WINDOW_S);
  const first = state.counts[0], last = state.counts[state.counts.length - 1];
  const out = {};
  if (!first || !last) return out;
  for (const [v, c] of Object.entries(last.counts)) {
    const b = first.counts[v] || { shed: 0, failed: 0 };
    out[v] = { shed: c.shed - b.shed, failed: c.failed - b.failed };
  }
  return out;
}

// ---- rendering ----------------------------------------------------------------------------------------
function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function spark(history) {
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 140 28");
  const top = Math.max(1, ...history.map((h) => Math.max(h.demand || 0, h.capacity || 0)));
  for (const key of ["capacity", "demand"]) {
    const pts = history.map((h, i) => `${(i * 140) / Math.max(1, history.length - 1)},${27 - ((h[key] || 0) / top) * 26}`);
    const path = document.createElementNS(svgNS, "polyline");
    path.setAttribute("class", key);
    path.setAttribute("points", pts.join(" "));
    svg.append(path);
  }
  return svg;
}

function renderLive(autoscale, variants, selections, failures) {
  const states = (autoscale && autoscale.variants) || {};
  const objectives = {};
  for (const d of selections) {
    const o = d.objective || {};
    const text = [o.latency_ms ? `${o.latency_ms} ms` : null, o.min_accuracy ? `acc ≥ ${o.min_accuracy}` : null]
      .filter(Boolean).join(", ");
    if (text) (objectives[d.variant] = objectives[d.variant] || new Set()).add(text);
  }
  const loaded = variants.filter((v) => v.loaded_on.length || states[v.name]);
  const rows = loaded.map((v) => {
    const s = states[v.name] || {};
    const history = (state.live[v.name] = (state.live[v.name] || []).concat([{ demand: s.demand_rps, capacity: s.capacity_rps }]).slice(-80));
    const share = s.capacity_rps ? Math.min(1, (s.demand_rps || 0) / s.capacity_rps) : 0;
    const bar = el("span", { class: "bar" + ((s.demand_rps || 0) > (s.capacity_rps || Infinity) ? " over" : "") }, el("span"));
    bar.firstChild.style.width = `${Math.round(share * 100)}%`;
    const f = failures[v.name] || { shed: 0, failed: 0 };
    const cls = s.state === "overloaded" ? "bad" : s.state === "underloaded" ? "warn" : "ok";
    return el("tr", { "data-variant": v.name },
      el("td", {}, v.name),
      el("td", { class: cls, title: s.reason || "" }, s.state || "loaded"),
      el("td", {}, String((s.replicas || v.loaded_on).length)),
      el("td", {}, bar, `${fmt(s.demand_rps)} / ${fmt(s.capacity_rps)}`),
      el("td", {}, spark(history)),
      el("td", {}, s.queue_rows ?? "-"),
      el("td", {}, `${fmt(s.p50_ms, 2)} / ${fmt(s.p99_ms, 2)}`),
      el("td", {}, objectives[v.name] ? [...objectives[v.name]].join("; ") : "-"),
      el("td", { class: f.shed || f.failed ? "warn" : "" }, `${f.shed} / ${f.failed}`));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "9", class: "muted" }, "no variant loaded")));
  fill($("#live tbody"), rows);
}

function renderCatalog(tasks, archs, variants) {
  const rows = [];
  for (const task of tasks) {
    rows.push(el("tr", { class: "task" }, el("td", { colspan: "9" }, `task ${task.name} (metric ${task.metric})`)));
    for (const arch of archs.filter((a) => a.task === task.name)) {
      const acc = arch.accuracy === null ? "accuracy unknown" : `accuracy ${fmt(arch.accuracy, 3)} (${arch.accuracy_source})`;
      rows.push(el("tr", { class: "arch" }, el("td", { colspan: "9" }, `${arch.name}: ${acc}`)));
      for (const v of variants.filter((x) => x.architecture === arch.name)) {
        const p = v.profile || {};
        const interval = p.accuracy_low !== undefined && p.accuracy_low !== null ? ` [${fmt(p.accuracy_low, 3)}, ${fmt(p.accuracy_high, 3)}]` : "";
        const accuracy = v.accuracy === null ? "-" : `${fmt(v.accuracy, 3)} ${p.metric || task.metric}${interval} (${v.accuracy_source})`;
        const p50 = p.latency_p50_ms ? p.latency_p50_ms["1"] : undefined;
        rows.push(el("tr", { "data-variant": v.name },
          el("td", {}, v.name),
          el("td", { class: v.status === "ready" ? "ok" : "muted", title: v.reason || "" }, v.status),
          el("td", {}, accuracy),
          el("td", {}, p50 === undefined ? "-" : `${fmt(p50, 3)} ms`),
          el("td", {}, p.throughput ? `${fmt(p.throughput, 0)} rows/s` : "-"),
          el("td", {}, p.cost_per_1k ? `$${p.cost_per_1k.toPrecision(3)}` : "-"),
          el("td", {}, p.peak_memory_mb ? `${fmt(p.peak_memory_mb, 0)} MB` : "-"),
          el("td", {}, p.hardware || "-"),
          el("td", {}, v.loaded_on.join(", ") || "-")));
      }
    }
  }
  fill($("#catalog tbody"), rows);
}

function renderWorkers(workers, autoscale) {
  const seen = (autoscale && autoscale.workers) || {};
  fill($("#workers tbody"), workers.map((w) => {
    const s = seen[w.name] || {};
    const hosted = Object.entries(w.replicas).map(([v, st]) => `${v} (${st})`).join(", ") || "-";
    const cpu = w.cpu ?? s.cpu;
    return el("tr", { "data-worker": w.name },
      el("td", {}, w.name),
      el("td", {}, w.node || "this machine"),
      el("td", {}, w.kind),
      el("td", {}, w.cores.join(", ")),
      el("td", {}, cpu === null || cpu === undefined ? "-" : `${fmt(cpu * 100, 0)} %`),
      el("td", {}, `${fmt(w.rss_mb ?? s.rss_mb, 0)}${s.budget_mb ? " of " + fmt(s.budget_mb, 0) : ""}`),
      el("td", { class: w.alive ? "ok" : "bad" }, w.state),
      el("td", {}, hosted));
  }));
}

function renderDecisions(decisions) {
  const rows = decisions.slice().reverse().map((d) => el("tr", { "data-kind": d.kind },
    el("td", {}, when(d.time)),
    el("td", {}, d.kind),
    el("td", {}, [d.variant, d.worker].filter(Boolean).join(" on ") || "-"),
    el("td", {}, d.reason)));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "4", class: "muted" }, "none yet")));
  fill($("#decisions tbody"), rows);
}

function renderJobs(jobs) {
  const rows = jobs.map((j) => el("tr", {},
    el("td", {}, j.id),
    el("td", {}, j.model),
    el("td", { class: j.status === "failed" ? "bad" : j.status === "paused" ? "warn" : "" }, j.status),
    el("td", {}, `${fmt(j.progress * 100, 1)} % (${j.done_rows} of ${j.rows} rows)`),
    el("td", {}, j.reason || j.error || "-")));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "no jobs")));
  fill($("#jobs tbody"), rows);
}

function renderTasks(tasks) {
  const select = $("#q-task");
  const names = tasks.map((t) => t.name);
  if (names.join() === [...select.options].map((o) => o.value).join()) return;
  const chosen = select.value;
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  if (names.includes(chosen)) select.value = chosen;
}

// ---- the loop -----------------------------------------------------------------------------------------
async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    const kind = $("#d-kind").value || CONTROL_KINDS.join(",");
    const [tasks, archs, variants, workers, autoscale, decisions, selections, jobs, metrics] = await Promise.all([
      api("/api/v1/tasks"), api("/api/v1/architectures"), api("/api/v1/variants"), api("/api/v1/workers"),
      api("/api/v1/autoscale"), api(`/api/v1/decisions?kind=${kind}&limit=100`),
      api("/api/v1/decisions?kind=select&since=60s&limit=1000"), api("/api/v1/jobs"), api("/metrics"),
    ]);
    const now = Date.now() / 1000;
    state.counts.push({ t: now, counts: requestCounts(metrics) });
    state.tasks = tasks;
    renderTasks(tasks);
    renderLive(autoscale, variants, selections, recentFailures(now));
    renderCatalog(tasks, archs, variants);
    renderWorkers(workers, autoscale);
    renderDecisions(decisions);
    renderJobs(jobs);
    $("#status").textContent = `updated ${new Date().toLocaleTimeString()}` + (autoscale.enabled ? ` · policy ${autoscale.policy}` : " · autoscaling off");
  } catch (e) {
    if (e instanceof Unauthorized) {
      $("#key-form").hidden = false;
      $("#status").textContent = "this server wants an API key";
    } else {
      $("#status").textContent = `not updated: ${e.message}`;
    }
  } finally {
    state.busy = false;
  }
}

function sampleInput(spec) {
  const shape = spec.shape.map((d) => (d < 0 ? 1 : d));
  const n = shape.reduce((a, b) => a * b, 1);
  const data = Array.from({ length: n }, () => (spec.datatype === "BYTES" ? "infaas" : Math.round(Math.random() * 8)));
  return { name: spec.name, datatype: spec.datatype, shape, data };
}

async function sendQuery(event) {
  event.preventDefault();
  const task = state.tasks.find((t) => t.name === $("#q-task").value);
  if (!task) return;
  const parameters = {};
  if ($("#q-acc").value) parameters.min_accuracy = Number($("#q-acc").value);
  if ($("#q-lat").value) parameters.latency_ms = Number($("#q-lat").value);
  const body = { inputs: task.signature.inputs.map(sampleInput), parameters };
  const answer = $("#answer");
  answer.className = "muted";
  answer.textContent = "sending…";
  try {
    const r = await api(`/v2/models/${encodeURIComponent(task.name)}/infer`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const p = r.parameters || {};
    answer.className = "";
    answer.replaceChildren(
      "answered by ", el("code", { id: "answer-variant" }, p.variant || r.model_version || "?"),
      ` on ${p.worker || "?"} in ${fmt(p.total_ms, 2)} ms (predicted ${fmt(p.predicted_ms, 2)} ms): `,
      el("span", { id: "answer-reason" }, p.reason || ""));
  } catch (e) {
    answer.className = "bad";
    answer.textContent = e instanceof Unauthorized ? "this server wants an API key" : e.message;
  }
}

function start() {
  $("#d-kind").append(...CONTROL_KINDS.map((k) => el("option", { value: k }, k)));
  $("#d-kind").addEventListener("change", refresh);
  $("#query").addEventListener("submit", sendQuery);
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("#key").value;
    sessionStorage.setItem("infaas-key", state.key);
    $("#key-form").hidden = true;
    refresh();
  });
  api("/v2").then((s) => { $("#server").textContent = `${s.name} ${s.version}`; }).catch(() => {});
  refresh();
  setInterval(refresh, PERIOD_MS);
}

start();
