// The dashboard: polls /api/models (versions, states, labels, per-version counters) and renders one card per
// model, with live request rate and mean model time per version computed from successive polls, and a
// "try it" form per predict signature whose example body is generated from the signature's shapes.
"use strict";
const PERIOD_MS = 2000;
const previous = new Map();  // "model/version" -> {requests, latency, t}
const drafts = new Map();    // "model/signature" -> textarea text the user edited (kept across refreshes)
const answers = new Map();   // "model/signature" -> {text, status} of the last predict sent from the form
const opened = new Set();    // "model/signature" forms the user opened

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
  const inputs = Object.entries(sig.inputs).map(([a, t]) => `${a}: ${t.dtype} ${JSON.stringify(t.shape)}`).join(", ");
  const details = el("details", {"data-testid": `try-${key}`}, el("summary", {}, `try ${signature} (${inputs})`), area, button, out);
  details.open = opened.has(key);
  details.addEventListener("toggle", () => { if (details.open) opened.add(key); else opened.delete(key); });
  return details;
}

function card(m, now) {
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
  return el("section", {class: "model", "data-testid": `model-${m.name}`}, el("h2", {}, m.name, " ", ...labels), table, ...forms);
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [models, ready] = await Promise.all([fetch("/api/models").then((r) => r.json()), fetch("/readyz")]);
    status.textContent = ready.ok ? "ready" : "not ready";
    status.className = "pill " + (ready.ok ? "ok" : "bad");
    const now = performance.now();
    document.getElementById("models").replaceChildren(...models.models.map((m) => card(m, now)));
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  } catch (err) {
    status.textContent = "unreachable"; status.className = "pill bad";
  }
}

document.getElementById("period").textContent = PERIOD_MS / 1000;
refresh();
setInterval(refresh, PERIOD_MS);
