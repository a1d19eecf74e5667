"""What both clients share: the error type, argument normalisation, and the tf.Example helper.

The gRPC and REST clients mirror each other: same methods, same arguments, numpy results, one exception
type (`ServingClientError`) carrying the gRPC code name, the HTTP status and the server's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import input_pb2

# gRPC code name <-> HTTP status, TF Serving's table (http_server.cc::ToHTTPStatusCode)
CODE_TO_HTTP = {"OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
                "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
                "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
                "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401}
HTTP_TO_CODE = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
                503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


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
        self.http_status = http_status if http_status is not None else CODE_TO_HTTP.get(code)


@dataclass(frozen=True)
class Target:
    """Which servable a call addresses: a model, at most one of version/label, and a signature."""

    model: str
    version: int | None = None
    label: str | None = None
    signature: str = ""

    def __post_init__(self):
        if self.version is not None and self.label is not None:
            raise ValueError("give a version or a label, not both")


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


def _feature(values: Any) -> feature_pb2.Feature:
    vals = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
    f = feature_pb2.Feature()
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


def make_example(row: Mapping[str, Any]) -> example_pb2.Example:
    """{"age": 39.0, "education": "Bachelors", "hours_per_week": 40} → tf.train.Example (no TensorFlow)."""
    ex = example_pb2.Example()
    for k, v in row.items():
        ex.features.feature[k].CopyFrom(_feature(v))
    return ex


def make_input(rows: Iterable[Mapping[str, Any]], context: Mapping[str, Any] | None = None) -> input_pb2.Input:
    """The `Input` proto of Classify/Regress/MultiInference requests."""
    inp = input_pb2.Input()
    if context is not None:
        inp.example_list_with_context.context.CopyFrom(make_example(context))
        for r in rows:
            inp.example_list_with_context.examples.add().CopyFrom(make_example(r))
    else:
        for r in rows:
            inp.example_list.examples.add().CopyFrom(make_example(r))
    return inp


def example_to_json(ex: example_pb2.Example) -> dict:
    """tf.Example → the REST `examples` object form (floats keep a decimal point, bytes as b64 if not UTF-8)."""
    import base64

    out: dict[str, Any] = {}
    for k, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        if kind == "float_list":
            out[k] = [float(v) for v in f.float_list.value]
        elif kind == "int64_list":
            out[k] = list(f.int64_list.value)
        elif kind == "bytes_list":
            vals = []
            for b in f.bytes_list.value:
                try:
                    vals.append(b.decode("utf-8"))
                except UnicodeDecodeError:
                    vals.append({"b64": base64.b64encode(b).decode()})
            out[k] = vals
    return out
