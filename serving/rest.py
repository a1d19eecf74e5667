"""REST transport on `--rest_api_port`: TF Serving's routes, JSON and error mapping (`http_server.cc`,
`http_rest_api_handler.cc`, `http_rest_api_util.cc`), as a plain ASGI app served by uvicorn (httptools +
uvloop). The event loop only routes and writes; decoding, the model call and encoding run in a bounded
thread pool (`--rest_api_num_threads`), through the same core as gRPC.

Beyond TF Serving: `/healthz` (liveness) and `/readyz` (ready only when every configured model has an
AVAILABLE version, and false once shutdown starts) for Kubernetes probes.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from urllib.parse import unquote_to_bytes

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving import json_codec, metrics
from serving.config import prometheus_path
from serving.core import Spec
from serving.errors import (DeadlineExceededError, InternalError, InvalidArgumentError, ResourceExhaustedError,
                            ServingError, UnavailableError)

log = logging.getLogger("serving.rest")

_POST_RE = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
                      re.IGNORECASE)
_GET_RE = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
                     re.IGNORECASE)
_V1_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_ORIGIN_RE = re.compile(r"https?://.*", re.IGNORECASE)
_JSON = (b"content-type", b"application/json")
_IN_FLIGHT = metrics.IN_FLIGHT.labels("REST")
_CORS = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-methods", b"POST, GET"),
         (b"access-control-allow-headers", b"Content-Type")]


class _EmptyBodyError(InvalidArgumentError):
    """URL-parsing errors: TF Serving returns them before writing the error JSON (400, empty body)."""


def _decode_arg(raw: str, what: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _EmptyBodyError(f"Failed to decode {what}:{raw}") from None


def _parse_model_info(method: str, path: str) -> tuple[bool, str, int | None, str | None, str, str]:
    """`ParseModelInfo`: (matched, model, version, label, verb, subresource)."""
    m = (_POST_RE if method == "POST" else _GET_RE).fullmatch(path) if method in ("POST", "GET") else None
    if m is None:
        return False, "", None, None, "", ""
    name, vstr, label, last = m.group(1) or "", m.group(2), m.group(3), m.group(4) or ""
    if name:
        name = _decode_arg(name, "model name")
    version = None
    if vstr:
        v = int(vstr)
        if v >= 2**63:
            raise _EmptyBodyError(f"Failed to convert version: {vstr} to numeric.")
        version = v
    if label:
        label = _decode_arg(label, "model version label")
    return True, name, version, label, last, last


class RestHandler:
    """Synchronous request processing; every method runs in the worker pool."""

    def __init__(self, server):
        self.core = server.core
        self.registry = server.registry

    def process(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str, str, str]:
        """Returns (HTTP status, body, model name, API label, status code name) — the last three for metrics."""
        model, api = "", ""
        try:
            matched, model, version, label, verb, sub = _parse_model_info(method, path)
            if version is not None and label is not None:
                raise InvalidArgumentError(f"Both model version ({version}) and model version label ({label}) "
                                           "cannot be supplied.")
            spec = Spec(model, version, label)
            if method == "POST" and matched and verb in ("predict", "classify", "regress"):
                api = verb
                out = getattr(self, verb)(spec, body)
            elif method == "GET" and matched:
                if not model:
                    raise InvalidArgumentError("Missing model name in request.")
                out = self.metadata(spec) if sub == "metadata" else self.status(spec)
            else:
                raise InvalidArgumentError(f"Malformed request: {method} {path}")
            return 200, out, model, api, "OK"
        except _EmptyBodyError as e:
            return 400, b"", model, api, e.code.name
        except ServingError as e:
            return e.http_status, json_codec.error_json(e.message), model, api, e.code.name
        except Exception as e:  # noqa: BLE001 - a bug answers 500, never kills the server
            log.exception("REST %s %s failed", method, path)
            err = InternalError(f"{type(e).__name__}: {e}")
            return err.http_status, json_codec.error_json(err.message), model, api, err.code.name

    def predict(self, spec: Spec, body: bytes) -> bytes:
        doc = json_codec.parse(body)
        spec = replace(spec, signature_name=json_codec.signature_name(doc))
        inputs = self.core.signature_inputs(spec)
        allow_fast = b"true" not in body and b"false" not in body  # np.asarray would turn bools into numbers
        fmt, tensors = json_codec.predict_inputs(doc, inputs, spec.signature_name, allow_fast)
        pred = self.core.predict(spec, tensors, api="predict")
        return json_codec.predict_response(pred.outputs, fmt)

    def classify(self, spec: Spec, body: bytes) -> bytes:
        doc = json_codec.parse(body)
        spec = replace(spec, signature_name=json_codec.signature_name(doc))
        _, result = self.core.classify(spec, json_codec.examples_input(doc, "classify"))
        return json_codec.classify_response(result)

    def regress(self, spec: Spec, body: bytes) -> bytes:
        doc = json_codec.parse(body)
        spec = replace(spec, signature_name=json_codec.signature_name(doc))
        _, result = self.core.regress(spec, json_codec.examples_input(doc, "regress"))
        return json_codec.regress_response(result)

    def status(self, spec: Spec) -> bytes:
        resp = self.core.status_proto(spec.name, spec.version)  # a label is ignored, like TF Serving
        return json_format.MessageToJson(resp, preserving_proto_field_name=True, indent=1,
                                         always_print_fields_with_no_presence=True).encode()

    def metadata(self, spec: Spec) -> bytes:
        version, sigdefs = self.core.metadata(spec)
        opts = dict(preserving_proto_field_name=True, indent=1, always_print_fields_with_no_presence=True)
        ms = get_model_metadata_pb2.GetModelMetadataResponse().model_spec
        ms.name = spec.name
        ms.version.value = version
        sdm = get_model_metadata_pb2.SignatureDefMap()
        for k, v in sigdefs.items():
            sdm.signature_def[k].CopyFrom(v)
        return (f'{{\n"model_spec":{json_format.MessageToJson(ms, **opts)},\n"metadata": {{"signature_def": '
                f'{json_format.MessageToJson(sdm, **opts)}}}\n}}\n').encode()


def prometheus_text() -> bytes:
    """TF Serving's exposition (`util/prometheus_exporter.cc`): `# TYPE` lines, no HELP, counters without the
    `_total` suffix prometheus-client adds, no `_created` samples."""
    lines = []
    for fam in metrics.REGISTRY.collect():
        kind = fam.type if fam.type in ("counter", "gauge", "histogram") else "untyped"
        lines.append(f"# TYPE {fam.name} {kind}")
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            name = fam.name if (kind == "counter" and s.name == fam.name + "_total") else s.name
            labels = ",".join(f'{k}="{_esc(v)}"' for k, v in s.labels.items())
            value = int(s.value) if float(s.value).is_integer() else s.value
            lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
    return ("\n".join(lines) + "\n").encode()


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _not_found_html(path: str) -> bytes:
    return (f"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1><p>The requested URL "
            f"{path} was not found on this server.</p></body></html>").encode()


class RestApp:
    """The ASGI application."""

    def __init__(self, server, monitoring=None):
        opts = server.options
        self.server = server
        self.handler = RestHandler(server)
        self.pool = ThreadPoolExecutor(max_workers=max(1, opts.rest_api_num_threads), thread_name_prefix="rest")
        self.timeout = opts.rest_api_timeout_in_ms / 1000 if opts.rest_api_timeout_in_ms > 0 else None
        self.cors = opts.rest_api_enable_cors_support
        self.metrics_path = prometheus_path(monitoring) if monitoring is not None else None
        self.max_inflight = max(0, opts.max_inflight_requests)
        self.max_body = max(0, opts.rest_api_max_request_bytes)
        self.inflight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        method = scope["method"]
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        headers = dict(scope.get("headers") or [])
        too_big = self._too_big(headers.get(b"content-length"))
        if too_big is not None:
            await self._send(send, too_big.http_status, json_codec.error_json(too_big.message))
            return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            chunk = msg.get("body", b"")
            size += len(chunk)
            if self.max_body and size > self.max_body:
                err = self._too_big(str(size).encode())
                await self._send(send, err.http_status, json_codec.error_json(err.message))
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        if b"gzip" in headers.get(b"content-encoding", b""):
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                await self._send(send, 400, json_codec.error_json("Failed to decompress gzip request body"))
                return
        if self.metrics_path is not None and path.split("?")[0] == self.metrics_path:
            if path != self.metrics_path:
                await self._send(send, 400, f"Unexpected path: {path}. Should be {self.metrics_path}".encode(),
                                 ctype=b"text/plain")
                return
            await self._send(send, 200, prometheus_text(), ctype=b"text/plain")
            return
        if path in ("/healthz", "/readyz") and method in ("GET", "HEAD"):
            ready = path == "/healthz" or (self.server.registry.all_models_available()
                                           and not self.server._stop.is_set())
            await self._send(send, 200 if ready else 503, b'{"status": "%s"}' % (b"ok" if ready else b"not ready"))
            return
        if not _V1_RE.fullmatch(path):
            await self._send(send, 404, _not_found_html(path), ctype=b"text/html")
            return
        if method == "OPTIONS":
            origin = headers.get(b"origin", b"").decode("latin-1")
            await self._send(send, 200 if _ORIGIN_RE.fullmatch(origin) else 400, b"", ctype=None)
            return
        if self.max_inflight and self.inflight >= self.max_inflight:
            err = UnavailableError(f"Server is overloaded: {self.inflight} REST requests in flight "
                                   f"(--max_inflight_requests={self.max_inflight}); retry later")
            metrics.request("", "", "REST", err.code.name, None)
            await self._send(send, err.http_status, json_codec.error_json(err.message))
            return
        self.inflight += 1
        _IN_FLIGHT.inc()
        try:
            await self._process(send, method, path, body)
        finally:
            self.inflight -= 1
            _IN_FLIGHT.dec()

    def _too_big(self, length: bytes | None) -> ResourceExhaustedError | None:
        try:
            n = int(length) if length else 0
        except ValueError:
            return None
        if self.max_body and n > self.max_body:
            return ResourceExhaustedError(f"Request body of {n} bytes exceeds the limit of {self.max_body} bytes "
                                          "(--rest_api_max_request_bytes)")
        return None

    async def _process(self, send, method: str, path: str, body: bytes) -> None:
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self.pool, self.handler.process, method, path, body)
        is_inference = method == "POST"
        try:
            if is_inference and self.timeout is not None:
                status, out, model, api, code = await asyncio.wait_for(fut, self.timeout)
            else:
                status, out, model, api, code = await fut
        except asyncio.TimeoutError:
            err = DeadlineExceededError("Deadline Exceeded")
            status, out, model, api, code = err.http_status, json_codec.error_json(err.message), "", "", err.code.name
        metrics.request(model, api, "REST", code, time.perf_counter() - t0)
        await self._send(send, status, out)

    async def _send(self, send, status: int, body: bytes, ctype: bytes | None = _JSON[1]) -> None:
        headers = [(b"content-length", str(len(body)).encode())]
        if ctype is not None:
            headers.append((b"content-type", ctype))
        if self.cors:
            headers.extend(_CORS)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def start_rest(server, monitoring=None) -> None:
    """Serve the REST API in a background thread; returns once the port accepts connections."""
    import uvicorn

    opts = server.options
    app = RestApp(server, monitoring)
    config = uvicorn.Config(app, host="0.0.0.0", port=opts.rest_api_port, loop="uvloop", http="httptools",
                            lifespan="off", log_level="warning", access_log=False, server_header=False,
                            date_header=False, timeout_keep_alive=30,
                            timeout_graceful_shutdown=max(1, opts.shutdown_grace_period_seconds))
    userver = uvicorn.Server(config)
    t = threading.Thread(target=userver.run, name="rest", daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not userver.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise InternalError(f"Failed to start HTTP/REST server on port {opts.rest_api_port}")
        time.sleep(0.01)
    log.info("Exporting HTTP/REST API at:0.0.0.0:%d ...", opts.rest_api_port)

    def stop(grace: float) -> None:
        userver.should_exit = True
        t.join(grace)
        app.pool.shutdown(wait=True)

    server.stoppers.append(stop)
