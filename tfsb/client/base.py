"""What both clients share: the error type, retries, the metadata cache, argument normalisation, and the
tf.Example helpers.

The gRPC and REST clients mirror each other: same methods, same arguments, numpy results, the same retry
and metadata-cache behaviour, one exception type (`ServingClientError`) carrying the gRPC code name, the
HTTP status and the server's message. Status codes and HTTP statuses come from the server's own table
(`tfsb.wire.status`).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
from google.protobuf.message import Message

from tfsb.errors import ServingError
from tfsb.protos import Example, Feature, Input
from tfsb.wire.spec import Spec
from tfsb.wire.status import HTTP_STATUS, Code, code_for_http

T = TypeVar("T")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS gRPC channel (a server started with --ssl_config_file): `ca` verifies the server
    (system roots when None); `cert` + `key` are the client's own certificate, needed when the server sets
    `client_verify` (mutual TLS); `server_name` overrides the name checked against the server certificate."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None

    def credentials(self):
        import grpc

        if bool(self.cert) != bool(self.key):
            raise ValueError("a client certificate needs both --tls-cert and --tls-key")

        def read(path: str | None) -> bytes | None:
            return open(path, "rb").read() if path else None

        return grpc.ssl_channel_credentials(root_certificates=read(self.ca), private_key=read(self.key),
                                            certificate_chain=read(self.cert))


class ServingClientError(Exception):
    """Any failed call, from either client."""

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status if http_status is not None else HTTP_STATUS.get(Code.__members__.get(code), 500)

    @classmethod
    def from_http(cls, status: int, message: str, code_header: str | None = None) -> "ServingClientError":
        """An HTTP error answer: the code the server named in its header, else the one its status implies."""
        return cls(code_for_http(status, code_header).name, message, status)


@dataclass(frozen=True)
class RetryPolicy:
    """Both clients retry only UNAVAILABLE (server starting, overloaded, shutting down, connection refused),
    `retries` times with jittered exponential backoff; every other error is the request's own answer."""

    retries: int = 3
    backoff: float = 0.05

    def call(self, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except ServingClientError as e:
                if e.code != "UNAVAILABLE" or attempt >= self.retries:
                    raise
            time.sleep(self.backoff * (2**attempt) * (0.5 + random.random()))
            attempt += 1


class MetadataCache:
    """Signature summaries (`tfsb.wire.tensor_proto.signature_summary` form) per model and version or label,
    fetched with the client's own `metadata()`. A pinned version never changes; for `latest` and labels an
    entry is re-read after `ttl` seconds, or at once when the caller saw an answer that does not fit it."""

    def __init__(self, fetch: Callable[[Spec], dict], ttl: float = 10.0):
        self._fetch = fetch
        self.ttl = ttl
        self._entries: dict[tuple, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def signature(self, t: Spec, refresh: bool = False) -> dict:
        """{"method_name", "inputs", "outputs"} of the signature `t` names (empty maps if it has none)."""
        key = (t.name, t.version, t.label)
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
        if refresh or hit is None or (t.version is None and now - hit[0] > self.ttl):
            hit = (now, self._fetch(t)["signature_def"])
            with self._lock:
                self._entries[key] = hit
        return hit[1].get(t.signature, {"method_name": "", "inputs": {}, "outputs": {}})

    @staticmethod
    def only_input(signature: dict) -> str:
        """The name of a signature's single input (a bare array was given)."""
        inputs = signature["inputs"]
        if len(inputs) != 1:
            raise ValueError(f"signature has inputs {sorted(inputs)}: pass a dict")
        return next(iter(inputs))


def as_inputs(inputs: Mapping[str, Any] | np.ndarray | list, default_name: str | None = None) -> dict[str, np.ndarray]:
    """A single array means "the signature's only input" (REST sends it unnamed; gRPC needs the name)."""
    if isinstance(inputs, Mapping):
        return {k: _array(v) for k, v in inputs.items()}
    if default_name is None:
        return {"": _array(inputs)}
    return {default_name: _array(inputs)}


def _array(v: Any) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    arr = np.asarray(v)
    if arr.dtype.kind == "U":
        arr = np.array([s.encode() for s in arr.ravel().tolist()], dtype=object).reshape(arr.shape)
    elif arr.dtype == np.float64:
        arr = arr.astype(np.float32)  # Python floats mean float32, the dtype nearly every model serves
    return arr


def _feature(values: Any) -> Message:
    vals = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
    f = Feature()
    if not vals:
        return f
    first = vals[0]
    if isinstance(first, (bytes, str)):
        f.bytes_list.value.extend(v if isinstance(v, bytes) else str(v).encode() for v in vals)
    elif isinstance(first, (float, np.floating)):
        f.float_list.value.extend(float(v) for v in vals)
    else:
        f.int64_list.value.extend(int(v) for v in vals)
    return f


def make_example(row: Mapping[str, Any]) -> Message:
    """{"age": 39.0, "education": "Bachelors", "hours_per_week": 40} → tf.train.Example (no TensorFlow)."""
    ex = Example()
    for k, v in row.items():
        ex.features.feature[k].CopyFrom(_feature(v))
    return ex


def make_input(rows: Iterable[Mapping[str, Any]], context: Mapping[str, Any] | None = None) -> Message:
    """The `Input` proto of Classify/Regress/MultiInference requests."""
    inp = Input()
    if context is not None:
        inp.example_list_with_context.context.CopyFrom(make_example(context))
        for r in rows:
            inp.example_list_with_context.examples.add().CopyFrom(make_example(r))
    else:
        for r in rows:
            inp.example_list.examples.add().CopyFrom(make_example(r))
    return inp


class ClientBase:
    """What makes the two clients mirror images beyond their method lists: one retry policy, one metadata
    cache (filled through the subclass's own `metadata()`), context-manager use."""

    def __init__(self, *, retries: int, backoff: float, metadata_ttl: float):
        self.retry = RetryPolicy(retries, backoff)
        self.signatures = MetadataCache(lambda t: self.metadata(t.name, version=t.version, label=t.label),
                                        metadata_ttl)

    def predict(self, model: str, inputs: Mapping[str, Any] | np.ndarray, *, signature: str = "",
                version: int | None = None, label: str | None = None, timeout: float | None = None,
                output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """The outputs (`predict_versioned` also says which version answered)."""
        return self.predict_versioned(model, inputs, signature=signature, version=version, label=label,
                                      timeout=timeout, output_filter=output_filter)[0]

    @staticmethod
    def _target(model: str, version: int | None = None, label: str | None = None, signature: str = "") -> Spec:
        """The request's Spec; a version together with a label is refused as the server would refuse it."""
        try:
            return Spec(model, version, label, signature)
        except ServingError as e:
            raise ServingClientError(e.code.name, e.message) from None

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None,
                 timeout: float | None = None) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def metadata_ttl(self) -> float:
        return self.signatures.ttl

    @metadata_ttl.setter
    def metadata_ttl(self, seconds: float) -> None:
        self.signatures.ttl = seconds

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
