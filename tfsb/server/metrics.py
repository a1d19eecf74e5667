"""TF Serving's metrics (names, labels, microsecond histograms), kept with prometheus-client.

One `Metrics` object per server process, built at start-up by `server.build` and handed to the parts that
record (the core's inference, the transports, the loader, batching, warmup) and to those that read (the
`/monitoring` exposition, the model list, the history). Its methods are the only interface, so the exposition
can follow TF Serving's (`util/prometheus_exporter.cc`) without the rest knowing about it.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# TF Serving's request-latency buckets: 10 * 1.8^i µs, 33 of them (util.cc).
_LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
_LOAD_BUCKETS_US = tuple(10**i for i in range(3, 10))
_BATCH_BUCKETS = tuple(2**i for i in range(0, 13))
VERSION_RUNTIME_NAME = ":tensorflow_serving_bundle:version_runtime_latency"
# progressive delivery (tfsb.server.traffic): live requests per version of a model with a traffic entry, the
# mirrored (shadow) calls, and how the shadow's outputs differ from the answer the client got
TRAFFIC_REQUESTS = ":tensorflow_serving_bundle:traffic_requests"
TRAFFIC_LATENCY = ":tensorflow_serving_bundle:traffic_latency"
SHADOW_ABS_DIFF = ":tensorflow_serving_bundle:shadow_output_abs_diff"
SHADOW_REL_DIFF = ":tensorflow_serving_bundle:shadow_output_rel_diff"
SHADOW_AGREEMENT = ":tensorflow_serving_bundle:shadow_agreement"
TRAFFIC_FAMILIES = (TRAFFIC_REQUESTS, TRAFFIC_LATENCY, SHADOW_ABS_DIFF, SHADOW_REL_DIFF, SHADOW_AGREEMENT)
_DIFF_BUCKETS = (0.0, *(10.0**i for i in range(-7, 4)))


class Metrics:
    """The process's metric families in their own registry. `multiproc_dir` (--num_server_processes: the
    supervisor gives every worker PROMETHEUS_MULTIPROC_DIR) is where all workers' samples are merged from
    when they are read, so any worker's endpoint shows the whole server."""

    def __init__(self, multiproc_dir: str | None = None):
        self.multiproc_dir = multiproc_dir
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._request_count = Counter(":tensorflow:serving:request_count", "Number of requests.",
                                      ["model_name", "status"], registry=r)
        self._request_latency = Histogram(":tensorflow:serving:request_latency", "Request latency in microseconds.",
                                          ["model_name", "API", "entrypoint"], buckets=_LATENCY_BUCKETS_US,
                                          registry=r)
        self._runtime_latency = Histogram(":tensorflow:serving:runtime_latency", "Runtime latency in microseconds.",
                                          ["model_name", "API", "runtime"], buckets=_LATENCY_BUCKETS_US, registry=r)
        self._load_attempts = Counter(":tensorflow:cc:saved_model:load_attempt_count", "SavedModel load attempts.",
                                      ["model_path", "status"], registry=r)
        self._load_latency = Histogram(":tensorflow:cc:saved_model:load_latency",
                                       "SavedModel load latency in microseconds.", ["model_path"],
                                       buckets=_LOAD_BUCKETS_US, registry=r)
        self._warmup_latency = Histogram(":tensorflow:serving:model_warmup_latency",
                                         "Model warmup latency in microseconds.", ["model_path", "status"],
                                         buckets=_LOAD_BUCKETS_US, registry=r)
        self._warmup_records = Counter(":tensorflow:serving:model_warmup_records_read", "Warmup records read.",
                                       ["model_path", "status"], registry=r)
        self._in_flight = Gauge(":tensorflow_serving_bundle:requests_in_flight", "Requests being processed now.",
                                ["entrypoint"], registry=r, multiprocess_mode="livesum")
        self._version_state = Gauge(":tensorflow_serving_bundle:model_version_state",
                                    "State of each model version (ModelVersionStatus.State number).",
                                    ["model_name", "version"], registry=r, multiprocess_mode="livemin")
        # per version and label (TF Serving's request metrics are per model): what the dashboard charts
        self._version_runtime = Histogram(
            VERSION_RUNTIME_NAME, "Model runtime (µs) of successful inference requests per model version, and "
            "the version label the request named (\"\" for none).", ["model_name", "version", "label"],
            buckets=_LATENCY_BUCKETS_US, registry=r)
        self._batch_queuing = Histogram(":tensorflow:serving:batching_session:queuing_latency",
                                        "Time a request waits in the batch queue, in microseconds.",
                                        ["thread_pool_name"], buckets=_LATENCY_BUCKETS_US, registry=r)
        self._batch_input = Histogram(":tensorflow:serving:batching_session:input_batch_size",
                                      "Rows of real requests in each batch.", buckets=_BATCH_BUCKETS, registry=r)
        self._batch_processed = Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                          "Rows of each batch run, padding included.", buckets=_BATCH_BUCKETS,
                                          registry=r)
        self._batch_padding = Histogram(":tensorflow:serving:batching_session:padding_size", "Padding rows per batch.",
                                        ["execution_batch_size"], buckets=_BATCH_BUCKETS, registry=r)
        self._batch_runs = Counter(":tensorflow:serving:batching_session:wrapped_run_count", "Batched runs.",
                                   registry=r)
        self._traffic_requests = Counter(TRAFFIC_REQUESTS, "Requests to a model with a traffic entry, per version "
                                         "and role (live: answered to a client; shadow: mirrored, or DROPPED).",
                                         ["model_name", "version", "role", "status"], registry=r)
        self._traffic_latency = Histogram(TRAFFIC_LATENCY, "Model time (µs) of successful live and shadow calls.",
                                          ["model_name", "version", "role"], buckets=_LATENCY_BUCKETS_US, registry=r)
        self._shadow_abs = Histogram(SHADOW_ABS_DIFF, "Largest absolute difference between a shadow call's outputs "
                                     "and the live answer's (inf: shapes or types differ).",
                                     ["model_name", "version", "baseline"], buckets=_DIFF_BUCKETS, registry=r)
        self._shadow_rel = Histogram(SHADOW_REL_DIFF, "Largest relative difference between a shadow call's outputs "
                                     "and the live answer's.", ["model_name", "version", "baseline"],
                                     buckets=_DIFF_BUCKETS, registry=r)
        self._shadow_agreement = Counter(SHADOW_AGREEMENT, "Examples (classify: top class) or tensors (non-numeric "
                                         "outputs) on which the shadow agreed with the live answer, or not.",
                                         ["model_name", "version", "baseline", "agree"], registry=r)
        self._children: dict[tuple, object] = {}

    # ------------------------------------------------------------------------------------ reading
    def collect(self):
        """The metric families to expose: this process's, or all workers' merged."""
        if self.multiproc_dir:
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, path=self.multiproc_dir)
            return merged.collect()
        return self.registry.collect()

    def version_samples(self, families: Iterable | None = None) -> Iterator[tuple[str, dict, float]]:
        """The per-version histogram's samples (all workers' in multiprocess mode): (name, labels, value).
        `families`: one `collect()` a caller reads several views from (in multiprocess mode each collect
        merges every worker's files)."""
        for fam in self.collect() if families is None else families:
            if fam.name == VERSION_RUNTIME_NAME:
                for s in fam.samples:
                    yield s.name, s.labels, s.value

    def per_version(self, families: Iterable | None = None) -> dict[tuple[str, str], tuple[float, float]]:
        """{(model, version): (requests, runtime µs sum)}, over every label."""
        out: dict[tuple[str, str], list[float]] = {}
        for name, labels, value in self.version_samples(families):
            slot = 0 if name.endswith("_count") else 1 if name.endswith("_sum") else None
            if slot is not None:
                out.setdefault((labels["model_name"], labels["version"]), [0.0, 0.0])[slot] += value
        return {k: (v[0], v[1]) for k, v in out.items()}

    # ------------------------------------------------------------------------------------ recording
    def _child(self, metric: MetricWrapperBase, *labels: str):
        """metric.labels(...) costs several µs per call; the children are cached per label tuple."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def in_flight(self, entrypoint: str):
        """The in-flight gauge of one transport ("GRPC", "REST"): `inc()` / `dec()` around each request."""
        return self._child(self._in_flight, entrypoint)

    def request(self, model: str, api: str, entrypoint: str, code_name: str, seconds: float | None) -> None:
        self._child(self._request_count, model, code_name).inc()
        if seconds is not None and code_name == "OK":
            self._child(self._request_latency, model, api, entrypoint).observe(seconds * 1e6)

    def runtime_latency(self, model: str, api: str, runtime: str, seconds: float) -> None:
        """`runtime`: what ran the model (TF Serving's label: "TF1" for a SavedModel session, "TFLite")."""
        self._child(self._runtime_latency, model, api, runtime).observe(seconds * 1e6)

    def version_request(self, model: str, version: int, label: str | None, seconds: float) -> None:
        self._child(self._version_runtime, model, str(version), label or "").observe(seconds * 1e6)

    def traffic_request(self, model: str, version: str, role: str, status: str, seconds: float | None) -> None:
        self._child(self._traffic_requests, model, version, role, status).inc()
        if seconds is not None:
            self._child(self._traffic_latency, model, version, role).observe(seconds * 1e6)

    def shadow_compare(self, model: str, version: str, baseline: str, abs_diff: float | None,
                       rel_diff: float | None, agree: int = 0, disagree: int = 0) -> None:
        if abs_diff is not None:
            self._child(self._shadow_abs, model, version, baseline).observe(abs_diff)
        if rel_diff is not None:
            self._child(self._shadow_rel, model, version, baseline).observe(rel_diff)
        if agree:
            self._child(self._shadow_agreement, model, version, baseline, "true").inc(agree)
        if disagree:
            self._child(self._shadow_agreement, model, version, baseline, "false").inc(disagree)

    def traffic_samples(self, families: Iterable | None = None) -> Iterator[tuple[str, str, dict, float]]:
        """(family, sample name, labels, value) of the progressive-delivery families (all workers')."""
        for fam in self.collect() if families is None else families:
            if fam.name in TRAFFIC_FAMILIES:
                for s in fam.samples:
                    yield fam.name, s.name, s.labels, s.value

    def load(self, path: str, ok: bool, seconds: float) -> None:
        self._load_attempts.labels(path, "success" if ok else "fail").inc()
        if ok:
            self._load_latency.labels(path).observe(seconds * 1e6)

    def warmup(self, path: str, code_name: str, seconds: float, records: int) -> None:
        self._warmup_latency.labels(path, code_name).observe(seconds * 1e6)
        self._warmup_records.labels(path, code_name).inc(records)

    def version_state(self, model: str, version: int, state: int) -> None:
        self._child(self._version_state, model, str(version)).set(state)

    def batch_queuing(self, pool: str, seconds: float) -> None:
        self._batch_queuing.labels(pool).observe(seconds * 1e6)

    def batch_sizes(self, rows: int, padded: int) -> None:
        self._batch_input.observe(rows)
        self._batch_processed.observe(padded)
        self._batch_padding.labels(str(padded)).observe(padded - rows)
        self._batch_runs.inc()

    def forget_model(self, model: str) -> None:
        """Drop every label value of a model removed from the config (label sets must not only grow). Every
        per-model series is made through `_child`, so its cache knows them all; `remove` is the public API."""
        for metric, labels in [k for k in self._children if k[1] and k[1][0] == model]:
            del self._children[(metric, labels)]
            try:
                metric.remove(*labels)
            except KeyError:
                pass
