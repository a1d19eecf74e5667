"""REST client for TF Serving's JSON API: the same surface and return types as the gRPC client.

Output dtypes are not in REST responses, so they come from the model's metadata (fetched once per model
and signature and cached); the JSON itself is written and read with the server's codec (`serving.json_codec`),
so NaN/Infinity, b64 and int64 survive the round trip.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Mapping, Sequence

import numpy as np
import orjson
import requests
from requests.adapters import HTTPAdapter

from clients.base import (HTTP_TO_CODE, ServingClientError, Target, _array, example_to_json, make_example)
from serving import json_codec
from serving.codec import NP_DTYPE
from tensorflow.core.framework import types_pb2


def _jsonable(arr: np.ndarray, b64: bool):
    if arr.dtype == object or arr.dtype.kind in "SU":
        def conv(v):
            if isinstance(v, str):  # object arrays of str, e.g. a pandas string column
                v = v.encode("utf-8")
            if b64:
                return {"b64": base64.b64encode(v).decode()}
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(v).decode()}
        flat = [conv(v) for v in arr.ravel().tolist()]
        return np.array(flat, dtype=object).reshape(arr.shape).tolist() if arr.ndim else flat[0]
    return arr.tolist()


class RestClient:
    """requests.Session with a pooled adapter; `row=True` sends `instances`, else columnar `inputs`."""

    def __init__(self, base_url: str = "http://localhost:8501", *, timeout: float = 30.0, row: bool = False,
                 pool_size: int = 16, metadata_ttl: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.row = row
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._dtypes: dict[tuple, tuple[float, dict[str, int]]] = {}
        # REST answers do not say which version answered: for `latest` and labels the cached signature is
        # re-read after this many seconds (an answer that does not fit it is re-read at once)
        self.metadata_ttl = metadata_ttl

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------------ plumbing
    def _url(self, t: Target, verb: str | None = None) -> str:
        url = f"{self.base_url}/v1/models/{t.model}"
        if t.version is not None:
            url += f"/versions/{t.version}"
        elif t.label is not None:
            url += f"/labels/{t.label}"
        return url + (f":{verb}" if verb else "")

    def _request(self, method: str, url: str, body: bytes | None, timeout: float | None) -> Any:
        try:
            r = self.session.request(method, url, data=body, timeout=timeout if timeout is not None else self.timeout,
                                     headers={"Content-Type": "application/json"} if body is not None else None)
        except requests.Timeout as e:
            raise ServingClientError("DEADLINE_EXCEEDED", str(e), 504) from None
        except requests.ConnectionError as e:
            raise ServingClientError("UNAVAILABLE", str(e), 503) from None
        try:
            doc = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            try:
                doc = json_codec.parse(r.content) if r.content else {}
            except Exception:  # noqa: BLE001 - e.g. an HTML 404 page
                doc = {"error": r.text}
        if r.status_code != 200:
            msg = doc.get("error", r.text) if isinstance(doc, dict) else r.text
            raise ServingClientError(HTTP_TO_CODE.get(r.status_code, "UNKNOWN"), msg, r.status_code)
        return doc

    def _output_dtypes(self, t: Target, refresh: bool = False) -> dict[str, int]:
        """Output dtypes from the metadata of the version the request names (cached per model, version or
        label, and signature). A version change behind `latest` or a label is noticed by `_decode`."""
        key = (t.model, t.version, t.label, t.signature or "serving_default")
        cached = self._dtypes.get(key)
        now = time.monotonic()
        stale = cached is not None and t.version is None and now - cached[0] > self.metadata_ttl
        if refresh or cached is None or stale:
            md = self.metadata(t.model, version=t.version, label=t.label)
            sig = md["signature_def"].get(key[3], {"outputs": {}})
            cached = self._dtypes[key] = (now, {a: types_pb2.DataType.Value(o["dtype"])
                                                for a, o in sig["outputs"].items()})
        return cached[1]

    @staticmethod
    def _fits(value: Any, dtype: int) -> bool:
        """Whether JSON values can be of `dtype`: TF Serving writes floats with a '.', ints without one."""
        if dtype == types_pb2.DT_STRING:
            return True
        kind = np.asarray(value).dtype.kind
        npd = NP_DTYPE.get(dtype)
        if npd is None or kind in "OUS":
            return kind not in "iuf"
        if npd.kind == "f":
            return kind == "f" or np.asarray(value).size == 0
        if npd.kind in "iu":
            return kind in "iu" or np.asarray(value).size == 0
        return kind == npd.kind or np.asarray(value).size == 0

    def _decode(self, result: Any, dtypes: dict[str, int]) -> dict[str, np.ndarray] | None:
        """The outputs as arrays, or None when the answer does not fit the cached signature (another version
        answered: other output names or other value kinds)."""
        names = sorted(dtypes)
        if len(names) == 1:
            if self.row and isinstance(result, list) and result and isinstance(result[0], dict):
                return None  # several named outputs now, one before
            parts = {names[0]: result}
        elif self.row:
            if not isinstance(result, list) or any(not isinstance(r, dict) or set(r) != set(names) for r in result):
                return None
            parts = {n: [r[n] for r in result] for n in names}
        else:
            if not isinstance(result, dict) or set(result) != set(names):
                return None
            parts = {n: result[n] for n in names}
        if any(not self._fits(v, dtypes[n]) for n, v in parts.items()):
            return None
        return {n: self._to_array(v, dtypes[n]) for n, v in parts.items()}

    @staticmethod
    def _to_array(value: Any, dtype: int | None) -> np.ndarray:
        if dtype == types_pb2.DT_STRING:
            def conv(v):
                if isinstance(v, dict):
                    return base64.b64decode(v["b64"])
                return v.encode("utf-8") if isinstance(v, str) else v
            arr = np.array(value, dtype=object)
            flat = [conv(v) for v in arr.ravel().tolist()]
            out = np.empty(len(flat), dtype=object)
            out[:] = flat
            return out.reshape(arr.shape)
        npd = NP_DTYPE.get(dtype) if dtype is not None else None
        return np.array(value, dtype=npd)

    # ------------------------------------------------------------------------------------ API
    def predict(self, model: str, inputs: Mapping[str, Any] | np.ndarray, *, signature: str = "",
                version: int | None = None, label: str | None = None, timeout: float | None = None,
                output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        t = Target(model, version, label, signature)
        if isinstance(inputs, Mapping):
            named = {k: _array(v) for k, v in inputs.items()}
            payload = {k: _jsonable(v, b64=k.endswith("_bytes")) for k, v in named.items()}
            if self.row:
                n = len(next(iter(named.values())))
                payload = [{k: v[i] for k, v in payload.items()} for i in range(n)]
        else:
            payload = _jsonable(_array(inputs), b64=False)
        body = {"instances" if self.row else "inputs": payload}
        if signature:
            body["signature_name"] = signature
        doc = self._request("POST", self._url(t, "predict"), orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                            timeout)
        result = doc["predictions" if self.row else "outputs"]
        out = self._decode(result, self._output_dtypes(t))
        if out is None:  # the model changed under `latest` or a label: read its signature again
            out = self._decode(result, self._output_dtypes(t, refresh=True))
        if out is None:
            raise ServingClientError("INTERNAL", "The response does not match the signature in the model's metadata "
                                     "(the version may have changed again); retry", 500)
        # REST has no output_filter: the server returns every output; the client applies the filter
        return {k: v for k, v in out.items() if not output_filter or k in output_filter}

    def _examples_body(self, examples, context, signature) -> dict:
        if hasattr(examples, "example_list") or hasattr(examples, "example_list_with_context"):
            kind = examples.WhichOneof("kind")
            if kind == "example_list_with_context":
                context = example_to_json(examples.example_list_with_context.context)
                rows = [example_to_json(e) for e in examples.example_list_with_context.examples]
            else:
                rows = [example_to_json(e) for e in examples.example_list.examples]
        else:
            rows = [example_to_json(make_example(r)) for r in examples]
            context = example_to_json(make_example(context)) if context is not None else None
        body: dict[str, Any] = {"examples": rows}
        if context is not None:
            body["context"] = context
        if signature:
            body["signature_name"] = signature
        return body

    def classify(self, model: str, examples, *, signature: str = "", version: int | None = None,
                 label: str | None = None, context: Mapping | None = None,
                 timeout: float | None = None) -> list[list[tuple[str, float]]]:
        t = Target(model, version, label, signature)
        doc = self._request("POST", self._url(t, "classify"),
                            orjson.dumps(self._examples_body(examples, context, signature)), timeout)
        return [[(c[0], float(np.float32(c[1]))) for c in row] for row in doc["results"]]

    def regress(self, model: str, examples, *, signature: str = "", version: int | None = None,
                label: str | None = None, context: Mapping | None = None, timeout: float | None = None) -> np.ndarray:
        t = Target(model, version, label, signature)
        doc = self._request("POST", self._url(t, "regress"),
                            orjson.dumps(self._examples_body(examples, context, signature)), timeout)
        return np.array(doc["results"], np.float32)

    def multi_inference(self, model: str, examples, tasks: Sequence[tuple[str, str]], *, version: int | None = None,
                        label: str | None = None, timeout: float | None = None) -> list:
        """TF Serving's REST API has no MultiInference; this runs the tasks one by one (same results)."""
        return [getattr(self, method)(model, examples, signature=sig, version=version, label=label, timeout=timeout)
                for sig, method in tasks]

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None,
                 timeout: float | None = None) -> dict:
        doc = self._request("GET", self._url(Target(model, version, label)) + "/metadata", None, timeout)
        sigs = {}
        for name, sd in doc["metadata"]["signature_def"]["signature_def"].items():
            if name.startswith("__"):
                continue

            def tensors(m):
                return {a: {"dtype": t["dtype"],
                            "shape": None if t["tensor_shape"].get("unknown_rank") else
                            [int(d["size"]) for d in t["tensor_shape"].get("dim", [])]}
                        for a, t in sorted(m.items())}

            sigs[name] = {"method_name": sd["method_name"], "inputs": tensors(sd.get("inputs", {})),
                          "outputs": tensors(sd.get("outputs", {}))}
        return {"model": doc["model_spec"]["name"], "version": int(doc["model_spec"]["version"]),
                "signature_def": dict(sorted(sigs.items()))}

    def status(self, model: str, *, version: int | None = None, timeout: float | None = None) -> list[dict]:
        doc = self._request("GET", self._url(Target(model, version)), None, timeout)
        return [{"version": int(s["version"]), "state": s["state"],
                 "error_code": types_pb2_error_code(s["status"]["error_code"]),
                 "error_message": s["status"].get("error_message", "")}
                for s in doc["model_version_status"]]

    def reload_config(self, config, *, timeout: float | None = None) -> None:
        raise ServingClientError("UNIMPLEMENTED", "TF Serving's REST API has no config reload; use GrpcClient",
                                 501)


def types_pb2_error_code(name: str) -> int:
    """REST status JSON spells error codes by name (tensorflow.error.Code); gRPC gives numbers."""
    from tensorflow.core.protobuf import error_codes_pb2

    return error_codes_pb2.Code.Value(name)
