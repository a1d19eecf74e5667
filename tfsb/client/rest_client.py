"""REST client for TF Serving's JSON API: the same surface and return types as the gRPC client.

Output dtypes are not in REST responses, so they come from the model's metadata (the shared
`MetadataCache`); the JSON itself is written and read with the server's own wire modules
(`tfsb.wire.json_*`), so NaN/Infinity, b64 and int64 survive the round trip. Error codes come from the
server's code header where it sends one (the embedded server), else from the HTTP status.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import orjson
import requests
from google.protobuf import json_format
from requests.adapters import HTTPAdapter

from tfsb import protos
from tfsb.client.base import ClientBase, ServingClientError, _array, make_example
from tfsb.wire import json_parse
from tfsb.wire.json_example import example_to_json
from tfsb.wire.json_request import to_json_value
from tfsb.wire.json_response import fits, from_json_value
from tfsb.wire.spec import Spec
from tfsb.wire.status import CODE_HEADER, VERSION_HEADER
from tfsb.wire.tensor_proto import signature_summary


class RestClient(ClientBase):
    """requests.Session with a pooled adapter; `row=True` sends `instances`, else columnar `inputs`."""

    def __init__(self, base_url: str = "http://localhost:8501", *, timeout: float = 30.0, row: bool = False,
                 pool_size: int = 16, retries: int = 3, backoff: float = 0.05, metadata_ttl: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.row = row
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # REST answers do not say which version answered: for `latest` and labels the cached signature is
        # re-read after `metadata_ttl` seconds (an answer that does not fit it is re-read at once)
        super().__init__(retries=retries, backoff=backoff, metadata_ttl=metadata_ttl)

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------------------------ plumbing
    def _url(self, t: Spec, verb: str | None = None) -> str:
        url = f"{self.base_url}/v1/models/{t.name}"
        if t.version is not None:
            url += f"/versions/{t.version}"
        elif t.label is not None:
            url += f"/labels/{t.label}"
        return url + (f":{verb}" if verb else "")

    def _request(self, method: str, url: str, body: bytes | None, timeout: float | None) -> Any:
        return self._answer(method, url, body, timeout)[0]

    def _answer(self, method: str, url: str, body: bytes | None, timeout: float | None) -> tuple[Any, Any]:
        """(JSON document, response headers)."""
        return self.retry.call(lambda: self._request_once(method, url, body, timeout))

    def _request_once(self, method: str, url: str, body: bytes | None, timeout: float | None) -> tuple[Any, Any]:
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
                doc = json_parse.parse(r.content) if r.content else {}
            except Exception:  # noqa: BLE001 - e.g. an HTML 404 page
                doc = {"error": r.text}
        if r.status_code != 200:
            msg = doc.get("error", r.text) if isinstance(doc, dict) else r.text
            raise ServingClientError.from_http(r.status_code, msg, r.headers.get(CODE_HEADER))
        return doc, r.headers

    def _output_dtypes(self, t: Spec, refresh: bool = False) -> dict[str, int]:
        """Output dtypes of the signature of the version the request names (the shared metadata cache; a
        version change behind `latest` or a label is noticed by `_decode`)."""
        outputs = self.signatures.signature(t, refresh)["outputs"]
        return {a: protos.DATA_TYPES[o["dtype"]] for a, o in outputs.items()}

    @staticmethod
    def _decode(result: Any, dtypes: dict[str, int], row: bool) -> dict[str, np.ndarray] | None:
        """The outputs as arrays, or None when the answer does not fit the cached signature (another version
        answered: other output names or other value kinds)."""
        names = sorted(dtypes)
        if len(names) == 1:
            if row and isinstance(result, list) and result and isinstance(result[0], dict):
                return None  # several named outputs now, one before
            parts = {names[0]: result}
        elif row:
            if not isinstance(result, list) or any(not isinstance(r, dict) or set(r) != set(names) for r in result):
                return None
            parts = {n: [r[n] for r in result] for n in names}
        else:
            if not isinstance(result, dict) or set(result) != set(names):
                return None
            parts = {n: result[n] for n in names}
        if any(not fits(v, dtypes[n]) for n, v in parts.items()):
            return None
        return {n: from_json_value(v, dtypes[n]) for n, v in parts.items()}

    # ------------------------------------------------------------------------------------ API
    def predict_versioned(self, model: str, inputs: Mapping[str, Any] | np.ndarray, *, signature: str = "",
                          version: int | None = None, label: str | None = None, timeout: float | None = None,
                          output_filter: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], int | None]:
        """`predict`, and the version that answered: the embedded server's `VERSION_HEADER` (None from a
        server that does not send it, such as tensorflow/serving)."""
        t = self._target(model, version, label, signature)
        if isinstance(inputs, Mapping):
            named = {k: _array(v) for k, v in inputs.items()}
            payload = {k: to_json_value(v, b64=k.endswith("_bytes")) for k, v in named.items()}
            if self.row:
                n = len(next(iter(named.values())))
                payload = [{k: v[i] for k, v in payload.items()} for i in range(n)]
        else:
            payload = to_json_value(_array(inputs))
        body = {"instances" if self.row else "inputs": payload}
        if signature:
            body["signature_name"] = signature
        doc, headers = self._answer("POST", self._url(t, "predict"),
                                    orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), timeout)
        result = doc["predictions" if self.row else "outputs"]
        out = self._decode(result, self._output_dtypes(t), self.row)
        if out is None:  # the model changed under `latest` or a label: read its signature again
            out = self._decode(result, self._output_dtypes(t, refresh=True), self.row)
        if out is None:
            raise ServingClientError("INTERNAL", "The response does not match the signature in the model's metadata "
                                     "(the version may have changed again); retry", 500)
        served = headers.get(VERSION_HEADER)
        # REST has no output_filter: the server returns every output; the client applies the filter
        return ({k: v for k, v in out.items() if not output_filter or k in output_filter},
                int(served) if served and served.isdigit() else None)

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
        t = self._target(model, version, label, signature)
        doc = self._request("POST", self._url(t, "classify"),
                            orjson.dumps(self._examples_body(examples, context, signature)), timeout)
        return [[(c[0], float(np.float32(c[1]))) for c in row] for row in doc["results"]]

    def regress(self, model: str, examples, *, signature: str = "", version: int | None = None,
                label: str | None = None, context: Mapping | None = None, timeout: float | None = None) -> np.ndarray:
        t = self._target(model, version, label, signature)
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
        doc = self._request("GET", self._url(self._target(model, version, label)) + "/metadata", None, timeout)
        sdm = json_format.ParseDict(doc["metadata"]["signature_def"], protos.SignatureDefMap(),
                                    ignore_unknown_fields=True)
        return {"model": doc["model_spec"]["name"], "version": int(doc["model_spec"]["version"]),
                "signature_def": signature_summary(sdm.signature_def)}

    def status(self, model: str, *, version: int | None = None, timeout: float | None = None) -> list[dict]:
        doc = self._request("GET", self._url(self._target(model, version)), None, timeout)
        return [{"version": int(s["version"]), "state": s["state"],
                 "error_code": protos.ERROR_CODES[s["status"]["error_code"]],
                 "error_message": s["status"].get("error_message", "")}
                for s in doc["model_version_status"]]

    def reload_config(self, config, *, timeout: float | None = None) -> None:
        raise ServingClientError("UNIMPLEMENTED", "TF Serving's REST API has no config reload; use GrpcClient",
                                 501)

