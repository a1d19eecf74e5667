"""The last minutes of traffic, for the dashboard's charts: every `period` seconds the per-version runtime
histogram (tfsb.server.metrics) is read, and the difference from the previous reading becomes one point per
version (requests/s, model time p50/p99 in ms) and per label the request named (the A/B split).

Kept from the cumulative metrics rather than per request, so the hot path pays nothing for it, and in
`--num_server_processes` mode every worker's history shows all workers' traffic."""

from __future__ import annotations

import threading
import time
from collections import deque

from tfsb.server.metrics import Metrics
from tfsb.server.traffic import read_evidence
from tfsb.wire.evidence import reading_delta, summary
from tfsb.wire.buckets import delta as _delta, quantile as _quantile

PERIOD_S = 2.0
KEEP = 150  # points: five minutes at the default period

_Reading = dict[tuple[str, str, str], tuple[float, list[tuple[float, float]]]]  # (model, version, label) →
#                                                                                (count, [(le, cumulative)])


def _read(metrics: Metrics, families) -> _Reading:
    out: dict = {}
    for name, labels, value in metrics.version_samples(families):
        key = (labels["model_name"], labels["version"], labels["label"])
        count, buckets = out.get(key, (0.0, []))
        if name.endswith("_count"):
            count = value
        elif name.endswith("_bucket"):
            buckets.append((float(labels["le"]), value))
        out[key] = (count, buckets)
    return {k: (c, sorted(b)) for k, (c, b) in out.items()}


class History:
    """A ring of points per model; `series()` is what `GET /api/history` answers."""

    def __init__(self, metrics: Metrics, period_s: float = PERIOD_S, keep: int = KEEP):
        self.metrics = metrics
        self.period_s = period_s
        self._points: deque = deque(maxlen=keep)  # (unix time, {model: {"versions": {...}, "labels": {...}}})
        self._last: tuple[float, _Reading] | None = None
        self._last_evidence: dict = {}
        self._lock = threading.Lock()

    def sample(self, now: float | None = None) -> None:
        """Take one point (the sampler thread calls this every period; a test may call it directly)."""
        now = time.time() if now is None else now
        families = list(self.metrics.collect())  # one read of every worker's metrics for both views
        reading = _read(self.metrics, families)
        evidence = read_evidence(self.metrics, families)
        with self._lock:
            last, self._last = self._last, (now, reading)
            last_evidence, self._last_evidence = self._last_evidence, evidence
            if last is None or now <= last[0]:
                return
            dt = now - last[0]
            versions: dict = {}
            labels: dict = {}
            for (model, version, label), (count, buckets) in reading.items():
                before_count, before_buckets = last[1].get((model, version, label), (0.0, []))
                n = count - before_count
                v = versions.setdefault(model, {}).setdefault(version, {"n": 0.0, "buckets": {}})
                v["n"] += n
                for le, k in _delta(buckets, before_buckets):
                    v["buckets"][le] = v["buckets"].get(le, 0.0) + k
                name = label or "(no label)"
                lab = labels.setdefault(model, {})
                lab[name] = lab.get(name, 0.0) + n / dt
            point = {}
            for model, vs in versions.items():
                out = {}
                for version, v in vs.items():
                    b = sorted(v["buckets"].items())
                    p50, p99 = _quantile(b, 0.5), _quantile(b, 0.99)
                    out[version] = {"rps": round(v["n"] / dt, 3),
                                    "p50_ms": None if p50 is None else round(p50 / 1e3, 3),
                                    "p99_ms": None if p99 is None else round(p99 / 1e3, 3)}
                point[model] = {"versions": out, "labels": {k: round(r, 3) for k, r in labels.get(model, {}).items()}}
            for model, roles in evidence.items():  # canary evidence per role and version (progressive delivery)
                canary = {}
                for role, sides in reading_delta(roles, last_evidence.get(model)).items():
                    for version, side in sides.items():
                        sm = summary(side)
                        n = sm["requests"] + sm["errors"]
                        canary[f"{role} v{version}"] = {
                            "rps": round(n / dt, 3), "p99_ms": sm["p99_ms"], "error_rate": sm["error_rate"],
                            "max_abs_diff": None if sm["max_abs_diff"] in (None, "inf") else sm["max_abs_diff"]}
                point.setdefault(model, {"versions": {}, "labels": {}})["canary"] = canary
            self._points.append((now, point))

    def series(self) -> dict:
        """{"period_s", "models": {model: {"t": [unix s], "versions": {v: {"rps"|"p50_ms"|"p99_ms": [...]}},
        "labels": {label: {"rps": [...]}}}}}: every series as long as "t", None where a point has no value."""
        with self._lock:
            points = list(self._points)
        models: dict = {}
        names = {m for _, p in points for m in p}
        ts = [t for t, _ in points]
        for model in sorted(names):
            vs = sorted({v for _, p in points for v in p.get(model, {}).get("versions", {})}, key=int)
            ls = sorted({lab for _, p in points for lab in p.get(model, {}).get("labels", {})})

            def col(version, field):
                return [p.get(model, {}).get("versions", {}).get(version, {}).get(field) for _, p in points]

            cs = sorted({k for _, p in points for k in p.get(model, {}).get("canary", {})})
            models[model] = {
                "canary": {k: {f: [p.get(model, {}).get("canary", {}).get(k, {}).get(f) for _, p in points]
                               for f in ("rps", "p99_ms", "error_rate", "max_abs_diff")} for k in cs},
                "t": ts,
                "versions": {v: {f: col(v, f) for f in ("rps", "p50_ms", "p99_ms")} for v in vs},
                "labels": {lab: {"rps": [p.get(model, {}).get("labels", {}).get(lab, 0.0) for _, p in points]}
                           for lab in ls},
            }
        return {"period_s": self.period_s, "models": models}

    def run(self, stopping) -> None:
        """Sample every period until `stopping.wait` says the server is shutting down."""
        self.sample()
        while not stopping.wait(self.period_s):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a chart gap, never a dead sampler
                pass

    def start(self, lifecycle) -> None:
        threading.Thread(target=self.run, args=(lifecycle,), name="history", daemon=True).start()
