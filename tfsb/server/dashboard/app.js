// The dashboard: polls /api/models (versions, states, labels, per-version counters) and /api/history (the last
// minutes of traffic, sampled by the server) and renders one card per model: live request rate and mean model
// time per version, charts of requests/s and model time p50/p99 per version and of the A/B split per label
// over time (drawn on a canvas, no library), for a model in a canary rollout its evidence (live vs shadow per
// version: counts, errors, p99, output difference) as a table and charts, and a "try it" form per predict signature whose example body is
// generated from the signature's shapes.
"use strict";
const PERIOD_MS = 2000;
const previous = new Map();  // "model/version" -> {requests, latency, t}
const drafts = new Map();    // "model/signature" -> textarea text the user edited (kept across refreshes)
const answers = new Map();   // "model/signature" -> {text, status} of the last predict sent from the form
const opened = new Set();    // "model/signature" forms the user opened
const COLORS = ["#2a6fdb", "#e07b00", "#1f8a4c", "#b3261e", "#7b3fbf", "#00838f", "#6d4c41"];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function exampleValue(dtype, dims) {
  const leaf = dtype.includes("STRING") ? "" : dtype.includes("BOOL") ? false : 0;
  const build = (ds) => ds.length === 0 ? leaf : Array.from({length: ds[0] < 0 ? 1 : ds[0]}, () => build(ds.slice(1)));
  return build(dims);
}

function exampleBody(name, sig) {
  const inputs = Object.entries(sig.inputs);
  const instance = inputs.length === 1
    ? exampleValue(inputs[0][1].dtype, (inputs[0][1].shape || [-1]).slice(1))
    : Object.fromEntries(inputs.map(([a, t]) => [a, exampleValue(t.dtype, (t.shape || [-1]).slice(1))]));
  const body = {instances: [instance]};
  if (name !== "serving_default") body.signature_name = name;
  return JSON.stringify(body);
}

function rates(model, v, now) {
  const key = `${model}/${v.version}`;
  const before = previous.get(key);
  previous.set(key, {requests: v.requests, latency: v.latency_us_sum, t: now});
  if (!before || now <= before.t) return {rate: "–", mean: "–"};
  const dn = v.requests - before.requests, dt = (now - before.t) / 1000;
  return {rate: (dn / dt).toFixed(1), mean: dn > 0 ? ((v.latency_us_sum - before.latency) / dn).toFixed(0) : "–"};
}

function tryIt(model, signature, sig) {
  const key = `${model}/${signature}`;
  const area = el("textarea", {"data-testid": `body-${key}`});
  area.value = drafts.get(key) ?? exampleBody(signature, sig);
  area.addEventListener("input", () => drafts.set(key, area.value));
  const out = el("pre", {class: "result", "data-testid": `result-${key}`});
  const shown = answers.get(key);
  if (shown) { out.textContent = shown.text; out.dataset.status = shown.status; }
  const button = el("button", {"data-testid": `send-${key}`}, "Send predict");
  button.addEventListener("click", async () => {
    out.textContent = "…";
    let answer;
    try {
      const r = await fetch(`/v1/models/${encodeURIComponent(model)}:predict`,
                            {method: "POST", headers: {"Content-Type": "application/json"}, body: area.value});
      answer = {text: `HTTP ${r.status}\n` + await r.text(), status: String(r.status)};
    } catch (err) { answer = {text: String(err), status: "error"}; }
    answers.set(key, answer);
    // the card may have been re-rendered while the request was in flight: write into the current one
    const current = document.querySelector(`pre[data-testid="result-${CSS.escape(key)}"]`) || out;
    current.textContent = answer.text;
    current.dataset.status = answer.status;
  });
  const inputs = Object.entries(sig.inputs)
    .map(([a, t]) => `${a}: ${t.dtype} ${t.shape === null ? "unknown rank" : JSON.stringify(t.shape)}`).join(", ");
  const details = el("details", {"data-testid": `try-${key}`}, el("summary", {}, `try ${signature} (${inputs})`), area, button, out);
  details.open = opened.has(key);
  details.addEventListener("toggle", () => { if (details.open) opened.add(key); else opened.delete(key); });
  return details;
}

// One line chart: x = time (the last minutes), y from 0; `series` = [{name, values (null = no point), dash}].
function chart(testid, title, t, series, unit) {
  const canvas = el("canvas", {"data-testid": testid, width: 520, height: 150});
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 44, R = 8, T = 22, B = 18;
  const values = series.flatMap((s) => s.values.filter((v) => v !== null && Number.isFinite(v)));
  const top = Math.max(...values, 0) * 1.15 || 1;
  const t0 = t.length ? t[0] : 0, t1 = t.length ? t[t.length - 1] : 1, span = Math.max(t1 - t0, 1);
  const x = (ti) => L + (W - L - R) * (ti - t0) / span, y = (v) => H - B - (H - T - B) * v / top;
  ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#8a93a6"; ctx.strokeStyle = "#e4e7ec";
  for (const frac of [0, 0.5, 1]) {
    const v = top / 1.15 * frac;
    ctx.beginPath(); ctx.moveTo(L, y(v)); ctx.lineTo(W - R, y(v)); ctx.stroke();
    ctx.fillText(v >= 100 ? v.toFixed(0) : v.toPrecision(2), 2, y(v) + 4);
  }
  ctx.fillText(`-${Math.round(span)} s`, L, H - 4); ctx.fillText("now", W - R - 22, H - 4);
  let points = 0, legend = L;
  series.forEach((s, i) => {
    ctx.strokeStyle = ctx.fillStyle = COLORS[i % COLORS.length];
    ctx.setLineDash(s.dash ? [4, 3] : []); ctx.lineWidth = 1.6; ctx.beginPath();
    let pen = false;
    s.values.forEach((v, k) => {
      if (v === null || !Number.isFinite(v)) { pen = false; return; }
      points += 1;
      if (pen) ctx.lineTo(x(t[k]), y(v)); else ctx.moveTo(x(t[k]), y(v));
      pen = true;
    });
    ctx.stroke(); ctx.setLineDash([]);
    ctx.fillText(s.name, legend, 12); legend += ctx.measureText(s.name).width + 14;
  });
  canvas.dataset.points = String(points);
  canvas.dataset.series = series.map((s) => s.name).join(",");
  canvas.dataset.max = String(Math.max(...values, 0));
  return el("figure", {class: "chart"}, el("figcaption", {}, title, el("span", {class: "muted"}, ` (${unit})`)), canvas);
}

function charts(m, h) {
  if (!h || !h.t.length) return el("p", {class: "muted", "data-testid": `charts-${m.name}`}, "charts: no traffic sampled yet");
  const versions = Object.entries(h.versions);
  const rps = versions.map(([v, s]) => ({name: `v${v}`, values: s.rps}));
  const latency = versions.flatMap(([v, s]) => [{name: `v${v} p50`, values: s.p50_ms}, {name: `v${v} p99`, values: s.p99_ms, dash: true}]);
  const totals = h.t.map((_, k) => Object.values(h.labels).reduce((a, s) => a + s.rps[k], 0));
  const split = Object.entries(h.labels).map(([l, s]) => ({name: l, values: s.rps.map((r, k) => totals[k] > 0 ? 100 * r / totals[k] : null)}));
  const figures = [
    chart(`chart-rps-${m.name}`, "requests/s per version", h.t, rps, "req/s"),
    chart(`chart-latency-${m.name}`, "model time per version", h.t, latency, "ms, p50 solid, p99 dashed"),
    chart(`chart-split-${m.name}`, "A/B split per label", h.t, split, "% of requests")];
  const canary = Object.entries(h.canary || {});
  if (canary.length) {  // progressive delivery: live vs shadow per version
    figures.push(
      chart(`chart-canary-latency-${m.name}`, "canary: model time p99, live and shadow", h.t,
            canary.map(([k, s]) => ({name: k, values: s.p99_ms, dash: k.startsWith("shadow")})), "ms"),
      chart(`chart-canary-errors-${m.name}`, "canary: error rate", h.t,
            canary.map(([k, s]) => ({name: k, values: s.error_rate.map((e) => e === null ? null : 100 * e), dash: k.startsWith("shadow")})), "%"),
      chart(`chart-canary-diff-${m.name}`, "canary: shadow output difference (bound of the largest)", h.t,
            canary.filter(([k]) => k.startsWith("shadow")).map(([k, s]) => ({name: k, values: s.max_abs_diff})), "absolute"));
  }
  return el("div", {class: "charts", "data-testid": `charts-${m.name}`}, ...figures);
}

function canaryTable(m) {
  if (!m.traffic) return "";
  const rows = [];
  for (const [role, versions] of Object.entries(m.traffic.evidence)) {
    for (const [v, s] of Object.entries(versions)) {
      rows.push(el("tr", {"data-testid": `canary-${m.name}-${role}-${v}`},
        el("td", {}, role), el("td", {}, v), el("td", {}, s.requests), el("td", {}, s.errors),
        el("td", {}, s.dropped), el("td", {}, s.p50_ms ?? "–"), el("td", {}, s.p99_ms ?? "–"),
        el("td", {}, s.max_abs_diff ?? "–"), el("td", {}, s.agreement ?? "–")));
    }
  }
  const cfg = JSON.stringify(m.traffic.config);
  return el("div", {class: "canary", "data-testid": `canary-${m.name}`}, el("p", {class: "muted"}, `traffic: ${cfg}`),
    el("table", {}, el("tr", {}, ...["role", "version", "ok", "errors", "dropped", "p50 ms", "p99 ms", "max |diff| ≤", "agreement"].map((h) => el("th", {}, h))), ...rows));
}

function card(m, now, history) {
  const labels = Object.entries(m.labels).map(([l, v]) => el("span", {class: "label", "data-testid": `label-${m.name}-${l}`}, `${l} → ${v}`));
  const rows = m.versions.map((v) => {
    const r = rates(m.name, v, now);
    const tags = Object.entries(m.labels).filter(([, lv]) => lv === v.version).map(([l]) => l).join(", ");
    return el("tr", {"data-testid": `version-${m.name}-${v.version}`},
      el("td", {}, v.version), el("td", {class: `state-${v.state}`}, v.state), el("td", {}, tags),
      el("td", {}, v.requests), el("td", {}, r.rate), el("td", {}, r.mean),
      el("td", {class: "error"}, v.error || ""));
  });
  const table = el("table", {}, el("tr", {}, ...["version", "state", "labels", "requests", "req/s", "µs/req (model)", ""].map((h) => el("th", {}, h))), ...rows);
  const forms = Object.entries(m.signatures).filter(([, s]) => s.method_name === "tensorflow/serving/predict")
    .map(([name, s]) => tryIt(m.name, name, s));
  return el("section", {class: "model", "data-testid": `model-${m.name}`}, el("h2", {}, m.name, " ", ...labels), table,
    canaryTable(m), charts(m, history.models[m.name]), ...forms);
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [models, history, ready] = await Promise.all([fetch("/api/models").then((r) => r.json()),
      fetch("/api/history").then((r) => r.json()), fetch("/readyz")]);
    status.textContent = ready.ok ? "ready" : "not ready";
    status.className = "pill " + (ready.ok ? "ok" : "bad");
    const now = performance.now();
    document.getElementById("models").replaceChildren(...models.models.map((m) => card(m, now, history)));
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  } catch (err) {
    status.textContent = "unreachable"; status.className = "pill bad";
  }
}

document.getElementById("period").textContent = PERIOD_MS / 1000;
refresh();
setInterval(refresh, PERIOD_MS);
