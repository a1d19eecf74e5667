"""Progressive delivery on version labels: shadow traffic, a weighted-split label, and the evidence a canary
is judged by. Configured outside TF Serving's `ModelServerConfig` (`--traffic_config_file`, or pushed with
`PUT /api/traffic`), so a models.config stays valid for the official image.

    {"models": {"mlp": {"shadow": {"to": "canary", "fraction": 0.1},
                        "split": {"label": "rollout", "weights": {"stable": 95, "canary": 5}}}}}

- `shadow`: a `fraction` of the model's live Predict/Classify/Regress requests is replayed against `to` (a
  label, or a version number) after the client's answer is computed. The mirrored call runs on its own
  thread and never delays or fails the live answer: when the shadow queue is full or the memory budget
  cannot hold the request's tensors again, it is dropped and counted.
- `split`: requests naming the version label `label` are spread over the weighted labels or versions. Only a
  label the models.config does not define: TF Serving's own labels keep their exact meaning.

Every live request of a model with an entry and every shadow call is counted per version in the metrics
(`tfsb.server.metrics`: requests and errors, model time, output differences), so the numbers are the same
from any worker process and a rollout step is judged by the difference between two readings."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import numpy as np

from tfsb.errors import InvalidArgumentError, ServingError
from tfsb.server.metrics import (SHADOW_ABS_DIFF, SHADOW_AGREEMENT, SHADOW_REL_DIFF, TRAFFIC_LATENCY,
                                 TRAFFIC_REQUESTS, Metrics)
from tfsb.wire.spec import Spec

log = logging.getLogger("tfsb.server.traffic")

SHADOW_API = "shadow"  # the `api` of mirrored calls: not counted as the version's traffic
MAX_SHADOW_QUEUE = 8  # mirrored calls waiting or running; beyond this one is dropped


def _target(value, where: str) -> str:
    """A label name, or a version number (an int, or a string of digits): kept as a string."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise InvalidArgumentError(f"{where}: a version label or a version number, not {value!r}")
    if isinstance(value, int) and value <= 0:
        raise InvalidArgumentError(f"{where}: version numbers are > 0, not {value}")
    return str(value)


def spec_for(name: str, target: str, signature_name: str = "") -> Spec:
    """A target string as a request spec: digits name a version, anything else a label."""
    if target.isdigit():
        return Spec(name, int(target), None, signature_name)
    return Spec(name, None, target, signature_name)


@dataclass(frozen=True)
class Shadow:
    to: str
    fraction: float


@dataclass(frozen=True)
class Split:
    label: str
    weights: tuple[tuple[str, float], ...]

    def pick(self, r: float) -> str:
        total = sum(w for _, w in self.weights)
        acc = 0.0
        for target, w in self.weights:
            acc += w / total
            if r < acc:
                return target
        return self.weights[-1][0]


@dataclass(frozen=True)
class ModelTraffic:
    shadow: Shadow | None = None
    split: Split | None = None


@dataclass(frozen=True)
class TrafficConfig:
    models: dict[str, ModelTraffic]
    digest: str

    @classmethod
    def parse(cls, text: str | bytes, *, empty_ok: bool = True) -> "TrafficConfig":
        """Validate a traffic config (JSON); every mistake is an InvalidArgumentError naming where it is. An
        empty text is the empty config (an empty file), unless `empty_ok` is False (a PUT must say it)."""
        if not text.strip():
            if not empty_ok:
                raise InvalidArgumentError('traffic config is empty: send the whole config ({"models": {}} '
                                           "clears it)")
            text = "{}"
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidArgumentError(f"traffic config is not JSON: {e}") from None
        except RecursionError:
            raise InvalidArgumentError("traffic config is not JSON: nested too deeply") from None
        if not isinstance(doc, dict) or set(doc) - {"models"}:
            raise InvalidArgumentError('traffic config: a JSON object with one key, "models"')
        models_doc = doc.get("models", {})
        if not isinstance(models_doc, dict):
            raise InvalidArgumentError('traffic config: "models" maps model names to their entries')
        models = {}
        for name, entry in models_doc.items():
            where = f"traffic config, model {name!r}"
            if not isinstance(entry, dict) or set(entry) - {"shadow", "split"}:
                raise InvalidArgumentError(f'{where}: an object with "shadow" and/or "split"')
            shadow = split = None
            if entry.get("shadow") is not None:
                s = entry["shadow"]
                if not isinstance(s, dict) or set(s) != {"to", "fraction"}:
                    raise InvalidArgumentError(f'{where}: "shadow" is {{"to": LABEL or VERSION, "fraction": 0..1}}')
                f = s["fraction"]
                if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:  # NaN fails too
                    raise InvalidArgumentError(f"{where}: shadow fraction must be a number in [0, 1], not {f!r}")
                shadow = Shadow(_target(s["to"], f"{where}, shadow"), float(f))
            if entry.get("split") is not None:
                s = entry["split"]
                if not isinstance(s, dict) or set(s) != {"label", "weights"}:
                    raise InvalidArgumentError(f'{where}: "split" is {{"label": NAME, "weights": {{TARGET: WEIGHT}}}}')
                label = s["label"]
                if not isinstance(label, str) or not label or label.isdigit():
                    raise InvalidArgumentError(f"{where}: the split label must be a non-numeric name, not {label!r}")
                w = s["weights"]
                if not isinstance(w, dict) or not w:
                    raise InvalidArgumentError(f"{where}: split weights map labels or versions to weights")
                weights = []
                for k, v in w.items():
                    t = _target(k, f"{where}, split")
                    if t == label:
                        raise InvalidArgumentError(f"{where}: the split label {label!r} cannot be one of its targets")
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                        raise InvalidArgumentError(f"{where}: split weight of {k!r} must be a number >= 0, not {v!r}")
                    weights.append((t, float(v)))
                if sum(v for _, v in weights) <= 0:
                    raise InvalidArgumentError(f"{where}: split weights must not all be 0")
                split = Split(label, tuple(weights))
            models[str(name)] = ModelTraffic(shadow, split)
        canonical = json.dumps(_to_doc(models), sort_keys=True, separators=(",", ":"))
        return cls(models, hashlib.sha256(canonical.encode()).hexdigest()[:16])

    def to_doc(self) -> dict:
        return _to_doc(self.models)


def _to_doc(models: dict[str, ModelTraffic]) -> dict:
    out = {}
    for name, mt in models.items():
        entry: dict = {}
        if mt.shadow is not None:
            entry["shadow"] = {"to": mt.shadow.to, "fraction": mt.shadow.fraction}
        if mt.split is not None:
            entry["split"] = {"label": mt.split.label, "weights": dict(mt.split.weights)}
        out[name] = entry
    return {"models": out}


EMPTY = TrafficConfig({}, TrafficConfig.parse("{}").digest)


# ---------------------------------------------------------------------------------------------- comparing
def compare_tensors(live: dict[str, np.ndarray], shadow: dict[str, np.ndarray]) -> tuple[float | None, float | None,
                                                                                         int, int]:
    """(largest absolute difference, largest relative difference, agreeing, disagreeing) over the outputs both
    have. Numeric tensors give differences (inf when shapes differ); others agree or not as a whole."""
    abs_max = rel_max = None
    agree = disagree = 0
    for alias, a in live.items():
        b = shadow.get(alias)
        if b is None:
            continue
        if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
            if a.shape != b.shape:
                d = r = float("inf")
            elif a.size == 0:
                d = r = 0.0
            else:
                fa, fb = a.astype(np.float64), b.astype(np.float64)
                diff = np.abs(fa - fb)
                d = float(np.max(diff))
                r = float(np.max(diff / np.maximum(np.abs(fa), 1e-12)))
                if d != d:  # NaN on one side only
                    d = r = float("inf")
            abs_max, rel_max = max(abs_max or 0.0, d), max(rel_max or 0.0, r)
        elif a.shape == b.shape and np.array_equal(a, b):
            agree += 1
        else:
            disagree += 1
    return abs_max, rel_max, agree, disagree


def _top_class(c) -> str | int | None:
    """A Classifications' top class: its label, or its position when the model gives no labels."""
    if not c.classes:
        return None
    i = max(range(len(c.classes)), key=lambda k: c.classes[k].score)
    return c.classes[i].label or i


def compare_classifications(live, shadow) -> tuple[int, int]:
    """(agreeing, disagreeing) examples by top class; examples only one side has disagree."""
    agree = sum(_top_class(a) == _top_class(b) for a, b in zip(live.classifications, shadow.classifications))
    n = max(len(live.classifications), len(shadow.classifications))
    return agree, n - agree


def compare_regressions(live, shadow) -> tuple[float, float]:
    a = np.array([r.value for r in live.regressions], np.float64)
    b = np.array([r.value for r in shadow.regressions], np.float64)
    d, r, _, _ = compare_tensors({"outputs": a}, {"outputs": b})
    return d if d is not None else 0.0, r if r is not None else 0.0


# ---------------------------------------------------------------------------------------------- runtime
class Traffic:
    """The current traffic config of one server process and the shadow worker. `entry` is on every
    request's path (one dict lookup); the rest only for models with an entry."""

    def __init__(self, metrics: Metrics, labels_of: Callable[[str], dict[str, int]], *,
                 max_queue: int = MAX_SHADOW_QUEUE, shared_path: str | None = None):
        self.metrics = metrics
        self._labels_of = labels_of  # the models.config's labels of a model (they win over a split label)
        self.config = EMPTY
        self.source = ""
        # --num_server_processes: a config PUT to one worker is written here, and every worker follows it
        self.shared_path = shared_path
        self.max_queue = max_queue
        self._pending = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------------------------ config
    def apply(self, config: TrafficConfig, source: str) -> bool:
        """Swap in a new config (atomic for readers); True when it differs from the current one."""
        changed = config.digest != self.config.digest
        self.config, self.source = config, source
        if changed:
            log.info("traffic config %s from %s: %s", config.digest, source, json.dumps(config.to_doc()))
        return changed

    def put(self, config: TrafficConfig, source: str) -> None:
        """A config set at run time: applied here, and handed to the sibling worker processes (an atomic
        write of the shared file they watch)."""
        self.apply(config, source)
        if self.shared_path:
            tmp = f"{self.shared_path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(config.to_doc(), f)
            os.replace(tmp, self.shared_path)

    def load_file(self, path: str) -> bool:
        with open(path, "rb") as f:
            return self.apply(TrafficConfig.parse(f.read()), path)

    def watch(self, path: str, period_s: float, stopping) -> None:
        """Re-read `path` every `period_s` while the server runs; a bad edit is logged and the config in
        force is kept (a typo must not stop a canary's shadow traffic nor shift its weights)."""
        def loop():
            last = None
            while not stopping.wait(period_s):
                try:
                    st = os.stat(path)
                except FileNotFoundError:  # not (yet) written: the config in force stays
                    continue
                key = (st.st_mtime_ns, st.st_size, st.st_ino)
                if key == last:
                    continue
                last = key
                try:
                    self.load_file(path)
                except (OSError, ServingError) as e:  # once per version of the file, not per poll
                    log.error("traffic config %s not applied: %s", path, getattr(e, "message", e))

        threading.Thread(target=loop, name="traffic-poll", daemon=True).start()

    # ------------------------------------------------------------------------------------ requests
    def entry(self, model: str) -> ModelTraffic | None:
        return self.config.models.get(model)

    def route(self, spec: Spec, entry: ModelTraffic) -> Spec:
        """A request naming the split label goes to one of its weighted targets (unless the models.config
        defines that label itself)."""
        split = entry.split
        if split is None or spec.label != split.label or split.label in self._labels_of(spec.name):
            return spec
        target = spec_for(spec.name, split.pick(random.random()), spec.signature_name)
        return replace(spec, version=target.version, label=target.label)

    def live(self, model: str, version: int, status: str, seconds: float | None) -> None:
        self.metrics.traffic_request(model, str(version), "live", status, seconds if status == "OK" else None)

    def mirror(self, model: str, entry: ModelTraffic, version: int, nbytes: int, budget,
               run: Callable[[Spec], tuple[int, object, float]], compare: Callable[[object], tuple]) -> bool:
        """Maybe mirror one answered request: `run(spec)` repeats it against the shadow target and returns
        (version, result, model seconds); `compare(result)` gives (abs, rel, agree, disagree) against the
        live answer. Returns whether it was queued."""
        shadow = entry.shadow
        if shadow is None or shadow.fraction <= 0 or random.random() >= shadow.fraction:
            return False
        target = spec_for(model, shadow.to)
        if self._version_of(model, target) == str(version):  # the shadow target is the live version now
            return False
        with self._lock:
            busy = self._pending >= self.max_queue
            if not busy:
                self._pending += 1
        held = None
        if not busy:
            try:
                held = budget.reserve(nbytes, "A shadow request's tensors")
            except ServingError:
                busy = True
                with self._lock:
                    self._pending -= 1
        if busy:
            self.metrics.traffic_request(model, self._version_of(model, target), "shadow", "DROPPED", None)
            return False

        def job():
            try:
                self._run_shadow(model, version, target, run, compare)
            finally:
                held.release()
                with self._lock:
                    self._pending -= 1

        try:
            self._executor().submit(job)
        except RuntimeError:  # shutting down
            held.release()
            with self._lock:
                self._pending -= 1
            return False
        return True

    def _run_shadow(self, model: str, baseline: int, target: Spec, run, compare) -> None:
        try:
            version, result, seconds = run(target)
        except ServingError as e:
            self.metrics.traffic_request(model, self._version_of(model, target), "shadow", e.code.name, None)
            return
        except Exception as e:  # noqa: BLE001 - a shadow failure is evidence, never a crash
            log.warning("shadow call to %s failed: %s: %s", model, type(e).__name__, e)
            self.metrics.traffic_request(model, self._version_of(model, target), "shadow", "INTERNAL", None)
            return
        if version == baseline:  # the label moved onto the live version meanwhile: nothing to compare
            return
        self.metrics.traffic_request(model, str(version), "shadow", "OK", seconds)
        try:
            abs_d, rel_d, agree, disagree = compare(result)
        except Exception as e:  # noqa: BLE001
            log.warning("comparing a shadow answer of %s failed: %s", model, e)
            return
        self.metrics.shadow_compare(model, str(version), str(baseline), abs_d, rel_d, agree, disagree)

    def _version_of(self, model: str, target: Spec) -> str:
        """The version a shadow target names now (a label that does not resolve stays its name)."""
        if target.version is not None:
            return str(target.version)
        v = self._labels_of(model).get(target.label)
        return str(v) if v is not None else target.label

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        return self._pool

    def pending(self) -> int:
        return self._pending

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------ evidence
    def readings(self, families: Iterable | None = None) -> dict:
        return read_evidence(self.metrics, families)


def read_evidence(metrics: Metrics, families: Iterable | None = None) -> dict:
    """The cumulative evidence per model, from the metrics (every worker's):
    {model: {"live"|"shadow": {version: {"requests", "errors", "dropped", "latency_us": [["le", n]...],
    "abs_diff": [[le, n]...], "rel_diff": [...], "agree", "disagree", "baseline": [...]}}}}."""
    out: dict = {}
    for fam, sample, labels, value in metrics.traffic_samples(families):
        if sample.endswith("_created"):
            continue
        model, version = labels["model_name"], labels["version"]
        role = labels.get("role", "shadow")
        v = out.setdefault(model, {}).setdefault(role, {}).setdefault(version, _empty_side())
        if fam == TRAFFIC_REQUESTS:
            status = labels["status"]
            key = "requests" if status == "OK" else "dropped" if status == "DROPPED" else "errors"
            v[key] += value
        elif fam == TRAFFIC_LATENCY and sample.endswith("_bucket"):
            v["latency_us"].append([labels["le"], value])
        elif fam in (SHADOW_ABS_DIFF, SHADOW_REL_DIFF) and sample.endswith("_bucket"):
            v["abs_diff" if fam == SHADOW_ABS_DIFF else "rel_diff"].append([labels["le"], value])
            if labels["baseline"] not in v["baseline"]:
                v["baseline"].append(labels["baseline"])
        elif fam == SHADOW_AGREEMENT:
            v["agree" if labels["agree"] == "true" else "disagree"] += value
    for model in out.values():
        for side in model.values():
            for v in side.values():
                for k in ("latency_us", "abs_diff", "rel_diff"):
                    v[k] = _merge(v[k])
    return out


def _empty_side() -> dict:
    return {"requests": 0.0, "errors": 0.0, "dropped": 0.0, "latency_us": [], "abs_diff": [], "rel_diff": [],
            "agree": 0.0, "disagree": 0.0, "baseline": []}


def _merge(buckets: list) -> list:
    """Sum the bucket lists of several label sets (e.g. several baselines) by upper bound; bounds stay
    Prometheus' strings ("+Inf" has no JSON number)."""
    acc: dict[str, float] = {}
    for le, n in buckets:
        acc[le] = acc.get(le, 0.0) + n
    return [[le, acc[le]] for le in sorted(acc, key=float)]
