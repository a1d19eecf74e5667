"""`GET /api/models`: every configured model in one call — versions with their states (and load errors),
labels, the latest version's signatures, and per-version request counts and model time (TF Serving has no
such call: tensorflow/serving#795)."""

from __future__ import annotations

from serving import metrics
from tensorflow.core.framework import types_pb2
from serving.openapi import loaded_signatures


def _tensors(m) -> dict:
    out = {}
    for alias, info in sorted(m.items()):
        shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
        out[alias] = {"dtype": types_pb2.DataType.Name(info.dtype), "shape": shape, "name": info.name}
    return out


def signature_summary(sigdefs: dict) -> dict:
    return {name: {"method_name": sd.method_name, "inputs": _tensors(sd.inputs), "outputs": _tensors(sd.outputs)}
            for name, sd in sorted(sigdefs.items()) if not name.startswith("__")}


def model_list(registry) -> dict:
    counts = metrics.per_version()
    cfg = registry.config
    configured = {m.name: m for m in cfg.model_config_list.config} if cfg is not None else {}
    models = []
    for name in registry.names():
        mv = registry.model(name)
        if mv is None:
            continue
        versions = []
        for rec in mv.status():
            requests, latency = counts.get((name, str(rec.version)), (0.0, 0.0))
            versions.append({"version": rec.version, "state": rec.state.name,
                             "error": rec.error.message if rec.error is not None else None,
                             "requests": int(requests), "latency_us_sum": round(latency, 1)})
        m = configured.get(name)
        models.append({"name": name, "base_path": m.base_path if m is not None else "",
                       "labels": registry.labels(name), "versions": versions,
                       "signatures": signature_summary(loaded_signatures(registry, name))})
    return {"models": models}
