"""TF Serving's metrics (names, labels, microsecond histograms), kept with prometheus-client.

Recording functions are the only interface the rest of the server uses, so the exposition format can
follow TF Serving's (`util/prometheus_exporter.cc`) without the core knowing about it.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
# --num_server_processes: every worker writes its samples to files there and any worker's endpoint sums them
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def collect():
    """The metric families to expose: this process's, or all workers' merged."""
    if MULTIPROC_DIR:
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=MULTIPROC_DIR)
        return merged.collect()
    return REGISTRY.collect()


# TF Serving's request-latency buckets: 10 * 1.8^i µs, 33 of them (util.cc).
_LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))

REQUEST_COUNT = Counter(":tensorflow:serving:request_count", "Number of requests.",
                        ["model_name", "status"], registry=REGISTRY)
REQUEST_LATENCY = Histogram(":tensorflow:serving:request_latency", "Request latency in microseconds.",
                            ["model_name", "API", "entrypoint"], buckets=_LATENCY_BUCKETS_US, registry=REGISTRY)
RUNTIME_LATENCY = Histogram(":tensorflow:serving:runtime_latency", "Runtime latency in microseconds.",
                            ["model_name", "API", "runtime"], buckets=_LATENCY_BUCKETS_US, registry=REGISTRY)
LOAD_ATTEMPTS = Counter(":tensorflow:cc:saved_model:load_attempt_count", "SavedModel load attempts.",
                        ["model_path", "status"], registry=REGISTRY)
LOAD_LATENCY = Histogram(":tensorflow:cc:saved_model:load_latency", "SavedModel load latency in microseconds.",
                         ["model_path"], buckets=tuple(10**i for i in range(3, 10)), registry=REGISTRY)
WARMUP_LATENCY = Histogram(":tensorflow:serving:model_warmup_latency", "Model warmup latency in microseconds.",
                           ["model_path", "status"], buckets=tuple(10**i for i in range(3, 10)), registry=REGISTRY)
WARMUP_RECORDS = Counter(":tensorflow:serving:model_warmup_records_read", "Warmup records read.",
                         ["model_path", "status"], registry=REGISTRY)
IN_FLIGHT = Gauge(":tensorflow_serving_bundle:requests_in_flight", "Requests being processed now.",
                  ["entrypoint"], registry=REGISTRY, multiprocess_mode="livesum")
VERSION_STATE = Gauge(":tensorflow_serving_bundle:model_version_state",
                      "State of each model version (ModelVersionStatus.State number).",
                      ["model_name", "version"], registry=REGISTRY, multiprocess_mode="livemin")


# per version and label (TF Serving's request metrics are per model): what the dashboard shows and charts
VERSION_RUNTIME_NAME = ":tensorflow_serving_bundle:version_runtime_latency"
VERSION_RUNTIME = Histogram(VERSION_RUNTIME_NAME, "Model runtime (µs) of successful inference requests per model "
                            "version, and the version label the request named (\"\" for none).",
                            ["model_name", "version", "label"], buckets=_LATENCY_BUCKETS_US, registry=REGISTRY)


def version_request(model: str, version: int, label: str | None, seconds: float) -> None:
    _child(VERSION_RUNTIME, model, str(version), label or "").observe(seconds * 1e6)


def version_samples():
    """The per-version histogram's samples (all workers' in multiprocess mode): (name, labels, value)."""
    for fam in collect():
        if fam.name == VERSION_RUNTIME_NAME:
            for s in fam.samples:
                yield s.name, s.labels, s.value


def per_version() -> dict[tuple[str, str], tuple[float, float]]:
    """{(model, version): (requests, runtime µs sum)}, over every label."""
    out: dict[tuple[str, str], list[float]] = {}
    for name, labels, value in version_samples():
        slot = 0 if name.endswith("_count") else 1 if name.endswith("_sum") else None
        if slot is not None:
            out.setdefault((labels["model_name"], labels["version"]), [0.0, 0.0])[slot] += value
    return {k: (v[0], v[1]) for k, v in out.items()}


_BATCH_BUCKETS = tuple(2**i for i in range(0, 13))
BATCH_QUEUING = Histogram(":tensorflow:serving:batching_session:queuing_latency",
                          "Time a request waits in the batch queue, in microseconds.", ["thread_pool_name"],
                          buckets=_LATENCY_BUCKETS_US, registry=REGISTRY)
BATCH_INPUT_SIZE = Histogram(":tensorflow:serving:batching_session:input_batch_size",
                             "Rows of real requests in each batch.", buckets=_BATCH_BUCKETS, registry=REGISTRY)
BATCH_PROCESSED_SIZE = Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                 "Rows of each batch run, padding included.", buckets=_BATCH_BUCKETS,
                                 registry=REGISTRY)
BATCH_PADDING = Histogram(":tensorflow:serving:batching_session:padding_size", "Padding rows per batch.",
                          ["execution_batch_size"], buckets=_BATCH_BUCKETS, registry=REGISTRY)
BATCH_RUNS = Counter(":tensorflow:serving:batching_session:wrapped_run_count", "Batched runs.", registry=REGISTRY)


def batch_queuing(pool: str, seconds: float) -> None:
    BATCH_QUEUING.labels(pool).observe(seconds * 1e6)


def batch_sizes(rows: int, padded: int) -> None:
    BATCH_INPUT_SIZE.observe(rows)
    BATCH_PROCESSED_SIZE.observe(padded)
    BATCH_PADDING.labels(str(padded)).observe(padded - rows)
    BATCH_RUNS.inc()


_children: dict[tuple, object] = {}


def _child(metric, *labels):
    """metric.labels(...) costs several µs per call; the children are cached per label tuple."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def request(model: str, api: str, entrypoint: str, code_name: str, seconds: float | None) -> None:
    _child(REQUEST_COUNT, model, code_name).inc()
    if seconds is not None and code_name == "OK":
        _child(REQUEST_LATENCY, model, api, entrypoint).observe(seconds * 1e6)


def runtime_latency(model: str, api: str, runtime: str, seconds: float) -> None:
    """`runtime`: what ran the model (TF Serving's label: "TF1" for a SavedModel session, "TFLite")."""
    _child(RUNTIME_LATENCY, model, api, runtime).observe(seconds * 1e6)


def load(path: str, ok: bool, seconds: float) -> None:
    LOAD_ATTEMPTS.labels(path, "success" if ok else "fail").inc()
    if ok:
        LOAD_LATENCY.labels(path).observe(seconds * 1e6)


def warmup(path: str, code_name: str, seconds: float, records: int) -> None:
    WARMUP_LATENCY.labels(path, code_name).observe(seconds * 1e6)
    WARMUP_RECORDS.labels(path, code_name).inc(records)


def version_state(model: str, version: int, state: int) -> None:
    _child(VERSION_STATE, model, str(version)).set(state)


def forget_model(model: str) -> None:
    """Drop every label value of a model removed from the config (label sets must not only grow). Every
    per-model series is made through `_child`, so its cache knows them all; `remove` is the public API."""
    for metric, labels in [k for k in _children if k[1] and k[1][0] == model]:
        del _children[(metric, labels)]
        try:
            metric.remove(*labels)
        except KeyError:
            pass
