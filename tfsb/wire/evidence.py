"""A canary's evidence as the server reports it (`GET /api/traffic`: cumulative counts and histogram buckets
per model, role and version) and what is judged from it: the difference between two readings (one rollout
step) and its summary (error rate, latency p50/p99, the bound on the largest output difference, agreement).
Shared by the server's model list and the rollout tool, so both show the same numbers."""

from __future__ import annotations

from tfsb.wire.buckets import delta as bucket_delta, largest, quantile

_COUNTS = ("requests", "errors", "dropped", "agree", "disagree")
TAIL_SAMPLES = 5  # a latency gate looks at the quantile with this many answers above it, at most p99
_BUCKETS = ("latency_us", "abs_diff", "rel_diff")


def _floats(buckets) -> list[tuple[float, float]]:
    return [(float(le), float(n)) for le, n in buckets]


def side_delta(now: dict, before: dict | None) -> dict:
    """What one version saw between two readings (`before` None: since the server started)."""
    if not before:
        return {k: now.get(k, 0.0) for k in _COUNTS} | {k: _floats(now.get(k, [])) for k in _BUCKETS}
    out = {k: now.get(k, 0.0) - before.get(k, 0.0) for k in _COUNTS}
    for k in _BUCKETS:
        out[k] = bucket_delta(_floats(now.get(k, [])), _floats(before.get(k, [])))
    return out


def reading_delta(now: dict, before: dict | None) -> dict:
    """{role: {version: side}} of one model between two readings."""
    before = before or {}
    return {role: {v: side_delta(side, before.get(role, {}).get(v)) for v, side in versions.items()}
            for role, versions in now.items()}


def _round(x: float | None, digits: int = 3) -> float | str | None:
    """Rounded; infinity as the string "inf" (JSON has no number for it, and null would read as "nothing
    observed")."""
    if x is None:
        return None
    return "inf" if x == float("inf") else round(x, digits)


def summary(side: dict) -> dict:
    """requests (answered), errors, error_rate, dropped, p50_ms/p99_ms (bucket upper bounds), max_abs_diff /
    max_rel_diff (upper bounds of the largest difference seen: its bucket's bound) and agreement (share of
    agreeing examples or tensors), None where nothing was observed."""
    lat = _floats(side.get("latency_us", []))
    ok, errors = side.get("requests", 0.0), side.get("errors", 0.0)
    agree, disagree = side.get("agree", 0.0), side.get("disagree", 0.0)
    p50, p99 = quantile(lat, 0.5), quantile(lat, 0.99)
    abs_d, rel_d = largest(_floats(side.get("abs_diff", []))), largest(_floats(side.get("rel_diff", [])))
    return {"requests": int(ok), "errors": int(errors),
            "error_rate": _round(errors / (ok + errors), 4) if ok + errors else None,
            "dropped": int(side.get("dropped", 0.0)),
            "p50_ms": None if p50 is None else _round(p50 / 1e3), "p99_ms": None if p99 is None else _round(p99 / 1e3),
            "max_abs_diff": _round(abs_d, 12), "max_rel_diff": _round(rel_d, 12),
            "agreement": _round(agree / (agree + disagree), 4) if agree + disagree else None}


def summarize(seen: dict) -> dict:
    """{role: {version: summary}} of one model's {role: {version: side}} (a reading or a difference)."""
    return {role: {v: summary(side) for v, side in sorted(sides.items())} for role, sides in sorted(seen.items())}


def tail_quantile(*answered: float) -> float:
    """The latency quantile two sides can be compared at: p99 once each has 500 answers, lower before, so
    that at least `TAIL_SAMPLES` answers of each lie above it (a gate must not judge by one slow answer out
    of a few dozen)."""
    n = min(answered) if answered else 0
    return min(0.99, 1 - TAIL_SAMPLES / n) if n > 2 * TAIL_SAMPLES else 0.5


def latency_ms(side: dict, q: float) -> float | None:
    v = quantile(_floats(side.get("latency_us", [])), q)
    return None if v is None else v / 1e3
