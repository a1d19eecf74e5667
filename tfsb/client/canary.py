"""A gated rollout of one model version on TF Serving's version labels, on every replica at once.

    shadow phase → weighted steps (e.g. 5 → 25 → 50 → 100 %) → promote, or roll back at the first failed gate

The canary label is pointed at the new version first (`rollout.set_labels`: policy, AVAILABLE, every replica).
In the shadow phase each server mirrors a fraction of the model's live requests to the canary and compares
answers; in each weighted step, requests naming the split label (an opt-in label the models.config does not
define) are spread between the baseline and canary labels. Traffic settings go to every server with
`PUT /api/traffic` (and into `--traffic-file` when the servers read one), and each step is judged by the
difference between the servers' evidence readings (`GET /api/traffic`) at its start and its end, summed over
the servers. A failed gate restores the traffic settings and the labels everywhere. Every step's evidence is
printed and kept as JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import requests

from tfsb.client.base import ServingClientError
from tfsb.client.grpc_client import GrpcClient
from tfsb.client import rollout
from tfsb.wire.evidence import latency_ms, reading_delta, summarize, summary, tail_quantile
from tfsb.wire.status import CODE_HEADER


@dataclass(frozen=True)
class Gates:
    max_error_rate: float = 0.01  # canary errors / canary requests
    max_p99_ratio: float = 4.0  # canary p99 / baseline p99: buckets are 1.8x apart, so two buckets higher passes
    max_abs_diff: float | None = 1e-3  # shadow: the largest absolute output difference (its bucket's bound)
    max_rel_diff: float | None = None
    min_agreement: float = 0.99  # shadow: classify top class, non-numeric outputs
    min_requests: int = 20  # evidence below this fails the step (a canary nobody used proves nothing)


@dataclass(frozen=True)
class Plan:
    model: str
    version: int
    baseline_label: str = "stable"
    canary_label: str = "canary"
    split_label: str = "rollout"
    shadow_fraction: float = 0.1
    steps: tuple[int, ...] = (5, 25, 50, 100)
    hold_s: float = 30.0
    hold_requests: int = 0  # a step ends early once the canary has answered this many (0: time only)
    gates: Gates = field(default_factory=Gates)
    max_hold_s: float | None = None  # a step short of min_requests is held this long at most (None: 4 x hold_s)

    @property
    def longest_hold_s(self) -> float:
        return self.max_hold_s if self.max_hold_s is not None else 4 * self.hold_s


@dataclass
class Server:
    grpc: GrpcClient
    rest_url: str

    @property
    def name(self) -> str:
        return self.grpc.target


CONVERGE_S = 5.0  # how long a server's worker processes may take to follow a traffic config


class RolloutFailed(Exception):
    def __init__(self, step: str, reasons: list[str]):
        super().__init__(f"{step}: " + "; ".join(reasons))
        self.step, self.reasons = step, reasons


# ---------------------------------------------------------------------------------------------- servers' traffic
def _http(method: str, url: str, body: dict | None = None, timeout: float = 10.0) -> dict:
    try:
        r = requests.request(method, url, data=None if body is None else json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"}, timeout=timeout)
    except requests.RequestException as e:
        raise ServingClientError("UNAVAILABLE", f"{method} {url}: {e}") from None
    if r.status_code != 200:
        try:
            msg = r.json().get("error", r.text)
        except ValueError:
            msg = r.text
        raise ServingClientError.from_http(r.status_code, f"{method} {url}: {msg}",
                                           r.headers.get(CODE_HEADER))
    return r.json()


def traffic_of(server: Server) -> dict:
    try:
        return _http("GET", server.rest_url.rstrip("/") + "/api/traffic")
    except ServingClientError as e:
        if e.http_status == 404:  # tensorflow/serving, or --rest_api_extensions=false
            raise ServingClientError("FAILED_PRECONDITION", f"{server.rest_url} has no /api/traffic: a gated "
                                     "rollout needs the embedded server (python -m tfsb.server) with its REST "
                                     "extensions on; tensorflow/serving can only switch labels (`label`)") from None
        raise


def push_traffic(servers: Sequence[Server], doc: dict, traffic_file: str | None,
                 log: Callable[[str], None]) -> None:
    """Write the file the servers read (when given), then PUT the config to each server and check every one
    reports it (by digest)."""
    if traffic_file:
        rollout.write_text(traffic_file, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    failed = []
    for s in servers:
        try:
            digest = _http("PUT", s.rest_url.rstrip("/") + "/api/traffic", doc)["digest"]
            # a server of several worker processes answers from any of them: each must follow within seconds
            deadline = time.monotonic() + CONVERGE_S
            while any(traffic_of(s)["digest"] != digest for _ in range(4)):
                if time.monotonic() > deadline:
                    failed.append(f"{s.name}: does not report the config it accepted within {CONVERGE_S:g} s")
                    break
                time.sleep(0.1)
        except ServingClientError as e:
            failed.append(f"{s.name}: {e.code}: {e.message}")
    if failed:
        raise ServingClientError("UNAVAILABLE", "traffic config not applied on " + "; ".join(failed))
    log(f"traffic config on {len(servers)} server(s): {json.dumps(doc['models'])}")


def _with_entry(doc: dict, model: str, entry: dict | None) -> dict:
    models = dict(doc.get("models", {}))
    if entry:
        models[model] = entry
    else:
        models.pop(model, None)
    return {"models": models}


def readings(servers: Sequence[Server], model: str) -> list[dict]:
    return [traffic_of(s)["readings"].get(model, {}) for s in servers]


def observed(before: list[dict], after: list[dict]) -> dict:
    """{role: {version: counts and buckets}} of what every server saw between two readings, summed."""
    total: dict = {}
    for b, a in zip(before, after):
        for role, versions in reading_delta(a, b).items():
            for v, side in versions.items():
                acc = total.setdefault(role, {}).setdefault(v, None)
                total[role][v] = side if acc is None else _add(acc, side)
    return total


def evidence(before: list[dict], after: list[dict]) -> dict:
    """{role: {version: summary}} of what every server saw between two readings, summed over servers."""
    return summarize(observed(before, after))


def _add(a: dict, b: dict) -> dict:
    out = {}
    for k, v in a.items():
        if isinstance(v, list):
            mine = dict(v)
            out[k] = [(le, mine.get(le, 0.0) + n) for le, n in b[k]] if b[k] else v
        else:
            out[k] = v + b[k]
    return out


# ---------------------------------------------------------------------------------------------- gates
def _num(x) -> float | None:
    return None if x is None else float(x)


def judge(seen: dict, baseline: int, canary: int, gates: Gates, *, phase: str) -> list[str]:
    """The gates a step failed (empty: passed), from `observed()`. `phase`: "shadow" judges the mirrored calls
    against the live baseline; "split" judges the canary's live answers against the baseline's."""
    b_raw = seen.get("live", {}).get(str(baseline), {})
    c_raw = seen.get("shadow" if phase == "shadow" else "live", {}).get(str(canary), {})
    b, c = summary(b_raw), summary(c_raw)
    fails = []
    n = c["requests"] + c["errors"]
    if n < gates.min_requests:
        return [f"insufficient evidence: the canary answered {n} request(s), fewer than {gates.min_requests}"]
    rate = c["error_rate"] or 0.0
    if rate > gates.max_error_rate:
        fails.append(f"error rate {rate:.2%} > {gates.max_error_rate:.2%}")
    q = tail_quantile(c["requests"], b["requests"])  # p99 once both sides have 500 answers
    cp, bp = latency_ms(c_raw, q), latency_ms(b_raw, q)
    if cp is not None and bp:
        if cp / bp > gates.max_p99_ratio:
            fails.append(f"p99 (p{100 * q:.3g} of this step's answers) {cp:.3f} ms is {cp / bp:.1f}x the "
                         f"baseline's {bp:.3f} ms (> {gates.max_p99_ratio}x)")
    if phase == "shadow":
        d, r = _num(c.get("max_abs_diff")), _num(c.get("max_rel_diff"))
        if gates.max_abs_diff is not None and d is not None and d > gates.max_abs_diff:
            fails.append(f"outputs differ by up to {d:g} (> {gates.max_abs_diff:g} absolute)")
        if gates.max_rel_diff is not None and r is not None and r > gates.max_rel_diff:
            fails.append(f"outputs differ by up to {r:g} relative (> {gates.max_rel_diff:g})")
        agreement = _num(c.get("agreement"))
        if agreement is not None and agreement < gates.min_agreement:
            fails.append(f"agreement {agreement:.2%} < {gates.min_agreement:.2%}")
    return fails


# ---------------------------------------------------------------------------------------------- the rollout
@dataclass
class Outcome:
    model: str
    version: int
    baseline: int
    result: str  # "promoted" | "rolled back" | "dry run"
    steps: list[dict] = field(default_factory=list)
    reason: str = ""

    def to_doc(self) -> dict:
        return asdict(self)


def run(plan: Plan, config_path: str, servers: Sequence[Server], *, traffic_file: str | None = None,
        dry_run: bool = False, log: Callable[[str], None] = print,
        on_step: Callable[[dict], None] = lambda step: None) -> Outcome:
    """Roll `plan.version` out on every server (the first one is the primary the label tool reloads first);
    never raises once a change was made: a failure is an Outcome "rolled back" with its reason."""
    primary = servers[0]
    labels = rollout.read_config(config_path)
    entry = rollout.model_entry(labels, plan.model)
    if plan.baseline_label not in entry.version_labels:
        raise ServingClientError("FAILED_PRECONDITION", f"model {plan.model} has no {plan.baseline_label!r} label "
                                 "to roll out against")
    baseline = entry.version_labels[plan.baseline_label]
    if baseline == plan.version:
        raise ServingClientError("FAILED_PRECONDITION", f"{plan.baseline_label} already points at version "
                                 f"{plan.version} of {plan.model}")
    if plan.split_label in entry.version_labels:
        raise ServingClientError("INVALID_ARGUMENT", f"the split label {plan.split_label!r} is defined in the "
                                 "models.config, where it keeps TF Serving's meaning: choose another --split-label")
    original = [traffic_of(s)["config"] for s in servers]
    outcome = Outcome(plan.model, plan.version, baseline, "dry run")
    phases = ([("shadow", 0)] if plan.shadow_fraction > 0 else []) + [("split", p) for p in plan.steps]
    if dry_run:
        for phase, pct in phases:
            outcome.steps.append({"step": _step_name(phase, pct), "traffic": _entry(plan, phase, pct),
                                  "hold_s": plan.hold_s, "hold_requests": plan.hold_requests,
                                  "longest_hold_s": plan.longest_hold_s})
        log(f"dry run: {plan.model} {plan.baseline_label}={baseline} → version {plan.version} on "
            f"{len(servers)} server(s); steps: " + " → ".join(s["step"] for s in outcome.steps) +
            f"; gates: {asdict(plan.gates)}")
        return outcome
    files = rollout.config_files(config_path)
    originals = {f: f.read_text() for f in files}
    grpc_servers = [s.grpc for s in servers]
    try:
        rollout.set_labels(config_path, primary.grpc, plan.model, {plan.canary_label: plan.version},
                           replicas=grpc_servers[1:], log=log)
        for phase, pct in phases:
            name = _step_name(phase, pct)
            push_traffic(servers, _with_entry(original[0], plan.model, _entry(plan, phase, pct)), traffic_file, log)
            held_s, seen = _hold(plan, servers, phase)
            fails = judge(seen, baseline, plan.version, plan.gates, phase=phase)
            step = {"step": name, "held_s": held_s, "evidence": summarize(seen), "passed": not fails,
                    "failed_gates": fails}
            outcome.steps.append(step)
            on_step(step)
            log(_describe(step, baseline, plan.version, phase))
            if fails:
                raise RolloutFailed(name, fails)
        new = rollout.set_labels(config_path, primary.grpc, plan.model, {plan.baseline_label: plan.version},
                                 replicas=grpc_servers[1:], log=log)
        push_traffic(servers, original[0], traffic_file, log)  # e.g. the split label back on the baseline only
        outcome.result = "promoted"
        log(f"promoted: {plan.model} labels {new}")
        return outcome
    except (RolloutFailed, ServingClientError, TimeoutError, KeyboardInterrupt) as e:
        # an operator's Ctrl-C mid-rollout rolls back too: no half-moved weights are left behind
        outcome.result = "rolled back"
        outcome.reason = "interrupted" if isinstance(e, KeyboardInterrupt) else \
            str(e) if not isinstance(e, ServingClientError) else f"{e.code}: {e.message}"
        log(f"rolling back: {outcome.reason}")
        _roll_back(servers, original, traffic_file, originals, config_path, log)
        return outcome


def _hold(plan: Plan, servers: Sequence[Server], phase: str) -> tuple[float, dict]:
    """Hold one step: until the canary answered `hold_requests`, else for `hold_s`, and in either case until
    it has the `min_requests` a gate needs (a quiet period or a small shadow fraction holds longer, up to
    `longest_hold_s`, rather than failing a good canary for want of evidence). Returns (seconds held, what
    the servers saw meanwhile)."""
    before = readings(servers, plan.model)
    role = "shadow" if phase == "shadow" else "live"
    t0 = time.monotonic()
    while True:
        time.sleep(min(0.5, plan.hold_s))
        elapsed = time.monotonic() - t0
        side = evidence(before, readings(servers, plan.model)).get(role, {}).get(str(plan.version), {})
        n = side.get("requests", 0) + side.get("errors", 0)
        enough = n >= plan.gates.min_requests
        if enough and ((plan.hold_requests and n >= plan.hold_requests) or elapsed >= plan.hold_s):
            break
        if elapsed >= max(plan.hold_s, plan.longest_hold_s):
            break
    return round(time.monotonic() - t0, 2), observed(before, readings(servers, plan.model))


def _roll_back(servers, original, traffic_file, originals, config_path, log) -> None:
    """The traffic file, then every server's traffic config, then the label files as they were, reloaded
    everywhere. Each server gets back its own config (replicas may have differed)."""
    if traffic_file:
        rollout.write_text(traffic_file, json.dumps(original[0], indent=1, sort_keys=True) + "\n")
    for s, doc in zip(servers, original):
        try:
            push_traffic([s], doc, None, log)
        except ServingClientError as e:
            log(f"restoring the traffic config on {s.name} failed: {e.message}")
    rollout.restore(originals, config_path, [s.grpc for s in servers], log)


def _step_name(phase: str, pct: int) -> str:
    return "shadow" if phase == "shadow" else f"{pct}%"


def _entry(plan: Plan, phase: str, pct: int) -> dict:
    entry = {"shadow": {"to": plan.canary_label, "fraction": plan.shadow_fraction}} if plan.shadow_fraction > 0 \
        else {}
    # the split label resolves in every phase (clients that opted in keep working): all baseline while shadowing
    entry["split"] = {"label": plan.split_label,
                      "weights": {plan.baseline_label: 100 - pct, plan.canary_label: pct} if phase == "split"
                      else {plan.baseline_label: 100}}
    return entry


def _describe(step: dict, baseline: int, canary: int, phase: str) -> str:
    ev = step["evidence"]
    b = ev.get("live", {}).get(str(baseline), {})
    c = ev.get("shadow" if phase == "shadow" else "live", {}).get(str(canary), {})
    line = (f"step {step['step']}: {'PASSED' if step['passed'] else 'FAILED'} after {step['held_s']} s — canary "
            f"v{canary}: {c.get('requests', 0)} ok, {c.get('errors', 0)} errors, p99 {c.get('p99_ms')} ms; "
            f"baseline v{baseline}: {b.get('requests', 0)} ok, p99 {b.get('p99_ms')} ms")
    if phase == "shadow":
        line += f"; max |diff| ≤ {c.get('max_abs_diff')}, agreement {c.get('agreement')}, " \
                f"dropped {c.get('dropped', 0)}"
    if step["failed_gates"]:
        line += " — " + "; ".join(step["failed_gates"])
    return line


def save(outcome: Outcome, path: str | Path) -> None:
    Path(path).write_text(json.dumps(outcome.to_doc(), indent=1) + "\n")
