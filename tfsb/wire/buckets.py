"""Cumulative histogram buckets ([(upper bound, cumulative count)], as Prometheus keeps them): quantiles and
the difference between two readings. Shared by the server's traffic history and the rollout tool, which
judges each step by the difference between the readings taken at its start and end."""

from __future__ import annotations

Buckets = list[tuple[float, float]]


def quantile(buckets: Buckets, q: float) -> float | None:
    """The q-quantile of a bucketed distribution: the upper bound of the bucket that holds it (for the +Inf
    bucket, the largest finite bound). None when the buckets are empty."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    for le, n in buckets:
        if n >= q * total:
            return le if le != float("inf") else (buckets[-2][0] if len(buckets) > 1 else None)
    return None


def largest(buckets: Buckets) -> float | None:
    """The upper bound of the highest non-empty bucket (inf when values fell past the last finite bound):
    what bounds the maximum of the observed values. None when empty."""
    prev = 0.0
    top = None
    for le, n in sorted(buckets):
        if n > prev:
            top = le
        prev = n
    return top


def delta(now: Buckets, before: Buckets) -> Buckets:
    """The buckets of what was observed between two readings of the same histogram."""
    prev = dict(before)
    return [(le, n - prev.get(le, 0.0)) for le, n in sorted(now)]
