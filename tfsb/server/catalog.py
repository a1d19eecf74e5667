"""`GET /api/models`: every configured model in one call — versions with their states (and load errors),
labels, the latest version's signatures, per-version request counts and model time (TF Serving has no
such call: tensorflow/serving#795), and for a model with a traffic entry its config and the canary evidence
since start-up (per role and version). Base paths are left out."""

from __future__ import annotations

import os

from tfsb.server.metrics import Metrics
from tfsb.wire.tensor_proto import signature_summary
from tfsb.server.openapi import loaded_signatures
from tfsb.server.traffic import Traffic
from tfsb.wire.evidence import reading_delta, summarize


def _without_paths(message: str, version_path: str) -> str:
    """A load error as an operator needs it, without the host's filesystem layout."""
    base = os.path.dirname(version_path.rstrip("/"))
    return message.replace(version_path, "<version dir>").replace(base, "<base path>") if base else message


def model_list(registry, metrics: Metrics, traffic: Traffic | None = None) -> dict:
    """Models, versions, states, labels and signatures: what an operator needs, and no host paths (the REST
    port may be reachable by people who should not learn the server's filesystem layout)."""
    families = list(metrics.collect())  # one read of every worker's metrics for both views
    counts = metrics.per_version(families)
    cfg = registry.config
    configured = {m.name: m for m in cfg.model_config_list.config} if cfg is not None else {}
    models = []
    readings = traffic.readings(families) if traffic is not None and traffic.config.models else {}
    for name in registry.names():
        mv = registry.model(name)
        if mv is None:
            continue
        versions = []
        for rec in mv.status():
            requests, latency = counts.get((name, str(rec.version)), (0.0, 0.0))
            versions.append({"version": rec.version, "state": rec.state.name,
                             "error": _without_paths(rec.error.message, rec.path) if rec.error is not None else None,
                             "requests": int(requests), "latency_us_sum": round(latency, 1)})
        m = configured.get(name)
        models.append({"name": name, "platform": (m.model_platform if m is not None else "") or "tensorflow",
                       "labels": registry.labels(name), "versions": versions,
                       "signatures": signature_summary(loaded_signatures(registry, name), tensor_names=True)})
        entry = traffic.entry(name) if traffic is not None else None
        if entry is not None:
            models[-1]["traffic"] = {"config": traffic.config.to_doc()["models"][name],
                                     "evidence": summarize(reading_delta(readings.get(name, {}), None))}
    return {"models": models}
