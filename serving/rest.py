"""REST transport on `--rest_api_port`: TF Serving's routes, JSON and error mapping (`http_server.cc`,
`http_rest_api_handler.cc`, `http_rest_api_util.cc`), as a plain ASGI app served by uvicorn (httptools +
uvloop). The event loop only routes and writes; decoding, the model call and encoding run in a bounded
thread pool (`--rest_api_num_threads`), through the same core as gRPC.

Beyond TF Serving: `/healthz` (liveness) and `/readyz` (ready only when every configured model has an
AVAILABLE version, and false once shutdown starts) for Kubernetes probes.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from urllib.parse import unquote_to_bytes

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving import extensions, metrics
from serving.admission import JSON_EXPANSION
from serving.config import prometheus_path
from serving.core import Spec
from serving.errors import (DeadlineExceededError, InternalError, InvalidArgumentError, ResourceExhaustedError,
                            ServingError, UnavailableError)
from serving.wire import json_example, json_parse, json_request, json_response
from serving.wire.json_text import error_json
from serving.wire.status import CODE_HEADER

log = logging.getLogger("serving.rest")

_POST_RE = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
                      re.IGNORECASE)
_GET_RE = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
                     re.IGNORECASE)
_V1_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_ORIGIN_RE = re.compile(r"https?://.*", re.IGNORECASE)
_JSON = (b"content-type", b"application/json")
_CODE_HEADER = CODE_HEADER.encode()
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
        v = int(vstr) if len(vstr) <= 19 else 2**63  # thousands of digits: refused, never int()-converted
        if v >= 2**63:
            raise _EmptyBodyError(f"Failed to convert version: {vstr} to numeric.")
        version = v
    if label:
        label = _decode_arg(label, "model version label")
    return True, name, version, label, last, last


class _JsonInputs:
    """Decodes a predict body against the signature of the version the core resolved: one version lookup per
    request, so the dtypes and the model call always come from the same version, even mid-rollover."""

    __slots__ = ("doc", "signature_name", "allow_fast", "fmt")

    def __init__(self, doc, signature_name: str, allow_fast: bool):
        self.doc, self.signature_name, self.allow_fast, self.fmt = doc, signature_name, allow_fast, None

    def __call__(self, sig) -> dict:
        self.fmt, tensors = json_request.predict_inputs(self.doc, {a: t.dtype for a, t in sig.inputs.items()},
                                                      self.signature_name, self.allow_fast)
        return tensors

    @staticmethod
    def missing_signature(name: str) -> ServingError:
        return InvalidArgumentError(f'Serving signature name: "{name}" not found in signature def')


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
            return e.http_status, error_json(e.message), model, api, e.code.name
        except Exception as e:  # noqa: BLE001 - a bug answers 500, never kills the server
            log.exception("REST %s %s failed", method, path)
            err = InternalError(f"{type(e).__name__}: {e}")
            return err.http_status, error_json(err.message), model, api, err.code.name

    def predict(self, spec: Spec, body: bytes) -> bytes:
        doc = json_parse.parse(body)
        spec = replace(spec, signature_name=json_request.signature_name(doc))
        allow_fast = b"true" not in body and b"false" not in body  # np.asarray would turn bools into numbers
        decoder = _JsonInputs(doc, spec.signature_name, allow_fast)
        pred = self.core.predict(spec, decoder, api="predict")
        return json_response.predict_response(pred.outputs, decoder.fmt)

    def classify(self, spec: Spec, body: bytes) -> bytes:
        doc = json_parse.parse(body)
        spec = replace(spec, signature_name=json_request.signature_name(doc))
        _, result = self.core.classify(spec, json_example.examples_input(doc, "classify"))
        return json_response.classify_response(result)

    def regress(self, spec: Spec, body: bytes) -> bytes:
        doc = json_parse.parse(body)
        spec = replace(spec, signature_name=json_request.signature_name(doc))
        _, result = self.core.regress(spec, json_example.examples_input(doc, "regress"))
        return json_response.regress_response(result)

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
    for fam in metrics.collect():
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
            f"{html.escape(path)} was not found on this server.</p></body></html>").encode()


class _Refused(Exception):
    """A request answered before its body was read (or while it was read)."""

    def __init__(self, err: ServingError):
        self.err = err


def gunzip(body: bytes, limit: int, on_chunk=None) -> bytes:
    """Decompress a gzip body (several members allowed, like gzip.decompress) in bounded steps; stop with
    RESOURCE_EXHAUSTED as soon as the output passes `limit` (0 = none). `on_chunk(n)` sees every step, so the
    memory budget grows with the output instead of after it."""
    out, total, data = [], 0, body
    step = 1 << 20
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while True:
            try:
                chunk = d.decompress(data, step)
            except zlib.error:
                raise InvalidArgumentError("Failed to decompress gzip request body") from None
            total += len(chunk)
            if limit and total > limit:
                raise ResourceExhaustedError(f"Request body exceeds the limit of {limit} bytes once decompressed "
                                             "(--rest_api_max_request_bytes)")
            if on_chunk is not None and chunk:
                on_chunk(len(chunk))
            out.append(chunk)
            data = d.unconsumed_tail
            if d.eof or not data:
                break
        if not d.eof:
            raise InvalidArgumentError("Failed to decompress gzip request body")
        data = d.unused_data
    return b"".join(out)


INLINE_MAX_BODY = 16 * 1024  # bytes: a body this small parses in microseconds
INLINE_MAX_COST_S = 0.0005  # a route whose recent handler time exceeds this keeps to the worker pool


class _Costs:
    """Recent handler time per request path (model, version, verb), an exponentially weighted average: a
    route is answered on the event loop only while it stays cheap, so a slow model never stalls the loop for
    longer than one request. Bounded: paths are client-chosen."""

    MAX_PATHS = 1024

    def __init__(self):
        self._ewma: dict[str, float] = {}

    def cheap(self, path: str) -> bool:
        cost = self._ewma.get(path)
        return cost is not None and cost < INLINE_MAX_COST_S

    def observe(self, path: str, seconds: float) -> None:
        old = self._ewma.get(path)
        if old is None and len(self._ewma) >= self.MAX_PATHS:
            self._ewma.clear()
        self._ewma[path] = seconds if old is None else 0.8 * old + 0.2 * seconds


class RestApp:
    """The ASGI application. Routing and admission (in-flight limit, body size, memory budget) happen before
    a byte of the body is read; the body is then read with those limits, and everything that costs CPU or
    memory in proportion to it (gunzip, JSON, the model) runs in the worker pool."""

    def __init__(self, server, monitoring=None):
        opts = server.options
        self.server = server
        self.handler = RestHandler(server)
        self.budget = server.core.budget
        self.pool = ThreadPoolExecutor(max_workers=max(1, opts.rest_api_num_threads), thread_name_prefix="rest")
        self.timeout = opts.rest_api_timeout_in_ms / 1000 if opts.rest_api_timeout_in_ms > 0 else None
        self.cors = opts.rest_api_enable_cors_support
        self.metrics_path = prometheus_path(monitoring) if monitoring is not None else None
        self.max_inflight = max(0, opts.max_inflight_requests)
        self.max_body = max(0, opts.rest_api_max_request_bytes)
        self.extensions = opts.rest_api_extensions
        self.inflight = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._running: set[asyncio.Future] = set()
        self._cut = False
        self._costs = _Costs()

    def cut_off(self) -> None:
        """End of the shutdown grace period (on the loop): requests still running are answered 503 now."""
        self._cut = True
        for fut in list(self._running):
            fut.cancel()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        self.loop = self.loop or asyncio.get_running_loop()
        method = scope["method"]
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        headers = dict(scope.get("headers") or [])
        unread = headers.get(b"content-length", b"0") not in (b"0", b"") or b"transfer-encoding" in headers
        if self.metrics_path is not None and path.split("?")[0] == self.metrics_path:
            if path != self.metrics_path:
                await self._send(send, 400, f"Unexpected path: {path}. Should be {self.metrics_path}".encode(),
                                 ctype=b"text/plain", close=unread)
                return
            await self._send(send, 200, prometheus_text(), ctype=b"text/plain", close=unread)
            return
        if path in ("/healthz", "/readyz") and method in ("GET", "HEAD"):
            ready = path == "/healthz" or self.server.lifecycle.ready()
            await self._send(send, 200 if ready else 503, b'{"status": "%s"}' % (b"ok" if ready else b"not ready"), close=unread)
            return
        if self.extensions and method in ("GET", "HEAD") and path.startswith(("/api/", "/dashboard")):
            status, out, ctype = await asyncio.get_running_loop().run_in_executor(
                self.pool, extensions.get, self.server, path)
            await self._send(send, status, out, ctype=ctype, close=unread)
            return
        if not _V1_RE.fullmatch(path):
            await self._send(send, 404, _not_found_html(path), ctype=b"text/html", close=unread)
            return
        if method == "OPTIONS":
            origin = headers.get(b"origin", b"").decode("latin-1")
            await self._send(send, 200 if _ORIGIN_RE.fullmatch(origin) else 400, b"", ctype=None, close=unread)
            return
        if self.max_inflight and self.inflight >= self.max_inflight:
            err = UnavailableError(f"Server is overloaded: {self.inflight} REST requests in flight "
                                   f"(--max_inflight_requests={self.max_inflight}); retry later")
            metrics.request("", "", "REST", err.code.name, None)
            await self._send(send, err.http_status, error_json(err.message), close=unread, code=err.code.name)
            return
        self.inflight += 1
        _IN_FLIGHT.inc()
        held = None
        try:
            held = self._admit(headers.get(b"content-length"))
            body = await self._read_body(receive, held)
            if body is None:  # the client went away
                return
            await self._process(send, method, path, body, headers, held)
        except _Refused as r:
            metrics.request("", "", "REST", r.err.code.name, None)
            await self._send(send, r.err.http_status, error_json(r.err.message), close=True, code=r.err.code.name)
        finally:
            self.inflight -= 1
            _IN_FLIGHT.dec()
            if held is not None:
                held.release()

    def _admit(self, length: bytes | None):
        """Reserve what the declared body will cost once parsed, before reading it."""
        try:
            n = int(length) if length and len(length) < 20 else (0 if not length else None)
        except ValueError:
            n = None
        if n is None:
            raise _Refused(InvalidArgumentError("Invalid Content-Length header"))
        if self.max_body and n > self.max_body:
            raise _Refused(self._too_big(n))
        try:
            return self.budget.reserve(n * (1 + JSON_EXPANSION), f"A JSON request body of {n} bytes")
        except ServingError as e:
            raise _Refused(e) from None

    def _too_big(self, n: int) -> ResourceExhaustedError:
        return ResourceExhaustedError(f"Request body of {n} bytes exceeds the limit of {self.max_body} bytes "
                                      "(--rest_api_max_request_bytes)")

    async def _read_body(self, receive, held) -> bytes | None:
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if self.max_body and size > self.max_body:
                    raise _Refused(self._too_big(size))
                if size * (1 + JSON_EXPANSION) > held.bytes:  # chunked, or longer than declared
                    try:
                        held.grow(size * (1 + JSON_EXPANSION) - held.bytes, f"A JSON request body of {size} bytes")
                    except ServingError as e:
                        raise _Refused(e) from None
                chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    def _run(self, method: str, path: str, body: bytes, gzipped: bool, held, deadline: float | None):
        """Worker-pool side: gunzip with limits, then the handler (skipped when its deadline has passed)."""
        if gzipped:
            try:
                body = gunzip(body, self.max_body,
                              lambda n: held.grow(n * (1 + JSON_EXPANSION), "A decompressed JSON request body"))
            except ServingError as e:
                return e.http_status, error_json(e.message), "", "", e.code.name
        if deadline is not None and time.monotonic() > deadline:  # the client already has its 504
            err = DeadlineExceededError("Deadline Exceeded")
            return err.http_status, error_json(err.message), "", "", err.code.name
        return self.handler.process(method, path, body)

    def _timed_run(self, method: str, path: str, body: bytes, gzipped: bool, held, deadline: float | None):
        t0 = time.perf_counter()
        try:
            return self._run(method, path, body, gzipped, held, deadline)
        finally:
            self._costs.observe(path, time.perf_counter() - t0)

    async def _process(self, send, method: str, path: str, body: bytes, headers: dict, held) -> None:
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        is_inference = method == "POST"
        timeout = self.timeout if is_inference else None
        deadline = time.monotonic() + timeout if timeout is not None else None
        gzipped = b"gzip" in headers.get(b"content-encoding", b"")
        if not gzipped and len(body) <= INLINE_MAX_BODY and self._costs.cheap(path):
            # Small and recently fast: answering here costs less than the two thread hand-offs of the pool.
            status, out, model, api, code = self._timed_run(method, path, body, gzipped, held, None)
            metrics.request(self.server.core.metric_model_name(model), api, "REST", code, time.perf_counter() - t0)
            await self._send(send, status, out, code=code)
            return
        fut = loop.run_in_executor(self.pool, self._timed_run, method, path, body, gzipped, held, deadline)
        self._running.add(fut)
        try:
            if timeout is not None:
                status, out, model, api, code = await asyncio.wait_for(fut, timeout)
            else:
                status, out, model, api, code = await fut
        except asyncio.TimeoutError:
            err = DeadlineExceededError("Deadline Exceeded")
            status, out, model, api, code = err.http_status, error_json(err.message), "", "", err.code.name
        except asyncio.CancelledError:
            if not self._cut:
                raise
            err = UnavailableError("Server is shutting down: the request did not finish within the shutdown grace "
                                   "period (--shutdown_grace_period_seconds)")
            status, out, model, api, code = err.http_status, error_json(err.message), "", "", err.code.name
        finally:
            self._running.discard(fut)
        metrics.request(self.server.core.metric_model_name(model), api, "REST", code, time.perf_counter() - t0)
        await self._send(send, status, out, code=code)

    async def _send(self, send, status: int, body: bytes, ctype: bytes | None = _JSON[1], close: bool = False,
                    code: str = "OK") -> None:
        """`close`: the request's body was not (fully) read; closing beats reading the rest of it to discard.
        `code`: an error's canonical code, named in a header (several codes share an HTTP status)."""
        headers = [(b"content-length", str(len(body)).encode())]
        if code != "OK":
            headers.append((_CODE_HEADER, code.encode()))
        if close:
            headers.append((b"connection", b"close"))
        if ctype is not None:
            headers.append((b"content-type", ctype))
        if self.cors:
            headers.extend(_CORS)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _reuse_port_socket(host: str, port: int):
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def start_rest(server, monitoring=None) -> int:
    """Serve the REST API in a background thread; returns the port once it accepts connections."""
    import uvicorn

    from serving.rest_protocol import guarded_protocol

    opts = server.options
    app = RestApp(server, monitoring)
    grace = max(0, opts.shutdown_grace_period_seconds)
    config = uvicorn.Config(app, host=opts.rest_api_bind_address, port=opts.rest_api_port, loop="uvloop",
                            http=guarded_protocol(opts), ws="none", lifespan="off", log_level="warning",
                            access_log=False, server_header=False, date_header=False,
                            timeout_keep_alive=max(1, opts.rest_api_idle_timeout_seconds),
                            timeout_graceful_shutdown=grace + 2)
    userver = uvicorn.Server(config)
    sockets = None
    if server.control is not None:  # sibling worker processes share the port
        sockets = [_reuse_port_socket(opts.rest_api_bind_address, opts.rest_api_port)]
    t = threading.Thread(target=userver.run, kwargs={"sockets": sockets}, name="rest", daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not userver.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise InternalError(f"Failed to start HTTP/REST server on port {opts.rest_api_port}")
        time.sleep(0.01)
    log.info("Exporting HTTP/REST API at:%s:%d ...", opts.rest_api_bind_address, opts.rest_api_port)

    def stop(grace: float) -> None:
        userver.should_exit = True
        t.join(grace)
        if t.is_alive() and app.loop is not None:
            app.loop.call_soon_threadsafe(app.cut_off)
            t.join(2)
        app.pool.shutdown(wait=False, cancel_futures=True)

    server.lifecycle.on_drain(stop)
    return _bound_port(userver, opts.rest_api_port)


def _bound_port(userver, requested: int) -> int:
    """The port uvicorn listens on (the requested one, or the kernel's choice for 0)."""
    for srv in getattr(userver, "servers", []):
        for sock in getattr(srv, "sockets", []):
            return sock.getsockname()[1]
    return requested
