"""A/B routing by version label: weighted, sticky per key, with per-label counts, errors, latency, the versions
that answered each label, and the observed split against the requested weights."""

from __future__ import annotations

import bisect
import hashlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tfsb.client.base import ServingClientError

_SLOTS = 10_000


def parse_weights(spec: str) -> dict[str, float]:
    """"stable=90,canary=10" → {"stable": 90.0, "canary": 10.0}."""
    out = {}
    for part in filter(None, spec.split(",")):
        k, _, v = part.partition("=")
        out[k.strip()] = float(v)
    if not out or any(w < 0 for w in out.values()) or sum(out.values()) <= 0:
        raise ValueError(f"bad weights {spec!r}")
    return out


@dataclass
class LabelStats:
    count: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    versions: Counter = field(default_factory=Counter)  # version that answered → count ("unknown": not said)

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return {"count": self.count, "errors": self.errors,
                "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
                "versions": {str(v): n for v, n in sorted(self.versions.items(), key=lambda kv: str(kv[0]))}}


class ABRouter:
    """Hashes the key (a user id) into 10,000 slots split by weight: a key always maps to the same label
    while the weights stay the same, and the split converges to the weights."""

    def __init__(self, weights: dict[str, float]):
        total = sum(weights.values())
        self.labels = list(weights)
        self.weights = {label: w / total for label, w in weights.items()}
        bounds, acc = [], 0.0
        for label in self.labels:
            acc += weights[label] / total * _SLOTS
            bounds.append(round(acc))
        bounds[-1] = _SLOTS
        self._bounds = bounds
        self.stats = {label: LabelStats() for label in self.labels}
        self._lock = threading.Lock()

    def label_for(self, key: str) -> str:
        slot = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % _SLOTS
        return self.labels[bisect.bisect_right(self._bounds, slot)]

    def predict(self, client, model: str, inputs, key: str, **kw):
        label = self.label_for(key)
        t0 = time.perf_counter()
        try:
            out, served = client.predict_versioned(model, inputs, label=label, **kw)
        except ServingClientError:
            with self._lock:
                self.stats[label].count += 1
                self.stats[label].errors += 1
            raise
        with self._lock:
            s = self.stats[label]
            s.count += 1
            s.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            s.versions["unknown" if served is None else served] += 1
        return label, out

    def report(self) -> dict[str, dict]:
        with self._lock:
            total = sum(s.count for s in self.stats.values()) or 1
            return {label: {**s.summary(), "share": round(s.count / total, 4), "weight": round(self.weights[label], 4)}
                    for label, s in self.stats.items()}
