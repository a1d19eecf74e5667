"""REST transport on `--rest_api_port`: an ASGI app served by uvicorn (httptools + uvloop) around TF
Serving's routes (`tfsb.server.rest_routes`) with its HTTP behaviour (`http_server.cc`: 404 page, CORS, gzip
bodies, timeouts). The event loop routes, admits and writes; decoding, the model call and encoding run in
a bounded thread pool (`--rest_api_num_threads`), through the same core as gRPC.

Beyond TF Serving: `/healthz` (liveness) and `/readyz` (ready only when every configured model has an
AVAILABLE version, and false once shutdown starts) for Kubernetes probes.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from tfsb.server import extensions
from tfsb.server.history import History
from tfsb.server.admission import JSON_EXPANSION
from tfsb.server.batching import queued_here
from tfsb.server.config import MonitoringConfig, prometheus_path
from tfsb.server.core import Core
from tfsb.server.flags import ServerOptions
from tfsb.server.lifecycle import Lifecycle
from tfsb.server.registry import ModelRegistry
from tfsb.errors import (DeadlineExceededError, InternalError, InvalidArgumentError, ResourceExhaustedError,
                            ServingError, UnavailableError)
from tfsb.server.rest_routes import Answer, RestHandler, error_answer, prometheus_text
from tfsb.wire.json_text import error_json
from tfsb.wire.status import CODE_HEADER, VERSION_HEADER

log = logging.getLogger("tfsb.server.rest")

_V1_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_ORIGIN_RE = re.compile(r"https?://.*", re.IGNORECASE)
_JSON = (b"content-type", b"application/json")
_CODE_HEADER = CODE_HEADER.encode()
_VERSION_HEADER = VERSION_HEADER.encode()
_CORS = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-methods", b"POST, GET"),
         (b"access-control-allow-headers", b"Content-Type")]


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
INLINE_COST_RATIO = 8  # a route is answered on the event loop while its handler costs under this many hand-offs
QUEUED = math.inf  # what a run that went through a batch queue costs the loop: it must never run there


class _Costs:
    """Which routes are answered on the event loop, decided relative to this host's own transport cost.

    The figure that matters is how long a route holds the loop, set against what one pool hand-off costs.
    Per app, the hand-off: the CPU of a no-op round trip through the pool from an event loop, by the same
    `run_in_executor` + `wait_for` path a request takes, measured at start-up. Per request path (model,
    version, verb), two running averages:

    - on the loop, the handler's wall time: exactly how long it held the loop (a model that waits on a device
      or a lock holds it while using no CPU);
    - in the pool, its CPU time (`time.thread_time`): a lower bound on that wall time which, unlike wall time
      there, does not count the waits for the GIL that sharing it with the loop adds.

    A request that went through a batch queue (`batching.queued_here`) waited for other requests, which
    cannot arrive while it holds the loop: its route is charged infinity, in either place, until a run
    without the queue (batching off in a new version) replaces the figure.

    A route runs on the loop while its loop figure, or with none yet its pool figure, is under
    `INLINE_COST_RATIO` hand-offs: there the pool's thread switches would cost more than the work, and the
    loop is held for no longer than a few hand-offs. A route the loop found slow goes back to the pool and is
    tried on the loop again after `RETRY_FIRST` pooled requests (one preempted answer is not a slow route),
    twice as many after each further slow verdict, up to `RETRY_MAX` (a new version may be faster). Both
    figures come from the same host, so the decision does not flip with its speed. Bounded: paths are
    client-chosen."""

    MAX_PATHS = 1024
    RETRY_FIRST, RETRY_MAX = 16, 1024

    def __init__(self, handoff_s: float = float("inf")):
        self.handoff_s = handoff_s
        self._loop_s: dict[str, float] = {}
        self._pooled: dict[str, _Pooled] = {}

    def calibrate(self, pool: ThreadPoolExecutor, samples: int = 32,
                  new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop) -> float:
        """CPU (all threads) of one no-op round trip through `pool` from a private event loop made by
        `new_loop` (the server's kind), the least of `samples`: what the loop and a worker spend on a
        hand-off, without the queueing a busy pool adds."""

        async def probe() -> float:
            loop, best = asyncio.get_running_loop(), float("inf")
            for _ in range(samples):
                c0 = time.process_time()
                await asyncio.wait_for(loop.run_in_executor(pool, int), 10.0)
                best = min(best, time.process_time() - c0)
            return best

        loop = new_loop()
        try:
            self.handoff_s = loop.run_until_complete(probe())
        finally:
            loop.close()
        return self.handoff_s

    def _fits(self, seconds: float) -> bool:
        return seconds < INLINE_COST_RATIO * self.handoff_s

    def cheap(self, path: str) -> bool:
        on_loop = self._loop_s.get(path)
        if on_loop is not None:
            return self._fits(on_loop)
        pooled = self._pooled.get(path)
        return pooled is not None and self._fits(pooled.cpu_s)

    def observe_loop(self, path: str, wall_s: float) -> None:
        old = self._loop_s.get(path)
        if old is None and len(self._loop_s) >= self.MAX_PATHS:
            self._loop_s.clear()
        avg = self._loop_s[path] = _average(old, wall_s)
        pooled = self._pooled.get(path)
        if pooled is not None:
            pooled.since_loop = 0
            pooled.slow_verdicts = 0 if self._fits(avg) else pooled.slow_verdicts + 1

    def observe_pool(self, path: str, cpu_s: float) -> None:
        pooled = self._pooled.get(path)
        if pooled is None:
            if len(self._pooled) >= self.MAX_PATHS:
                self._pooled.clear()
            self._pooled[path] = _Pooled(cpu_s)
            return
        pooled.cpu_s = _average(pooled.cpu_s, cpu_s)
        pooled.since_loop += 1
        retry_after = min(self.RETRY_FIRST << max(0, pooled.slow_verdicts - 1), self.RETRY_MAX)
        if pooled.since_loop >= retry_after and path in self._loop_s:  # forget the loop's verdict: try it again
            del self._loop_s[path]


class _Pooled:
    """A route's figures in the pool: its average CPU per request, the requests pooled since its last run on
    the loop, and how many runs on the loop in a row found it slow (each doubles the wait for the next try)."""

    __slots__ = ("cpu_s", "since_loop", "slow_verdicts")

    def __init__(self, cpu_s: float):
        self.cpu_s, self.since_loop, self.slow_verdicts = cpu_s, 0, 0


def _average(old: float | None, new: float) -> float:
    """A running average in which infinity (a queued run) is a verdict, not a sample: it replaces the
    average, and the next finite sample replaces it."""
    if old is None or math.isinf(old) or math.isinf(new):
        return new
    return 0.8 * old + 0.2 * new


@dataclass(frozen=True)
class RestSettings:
    """The REST transport's own flags (the connection guard reads its limits from the same options)."""

    bind_address: str
    port: int
    num_threads: int
    timeout_s: float | None
    cors: bool
    max_inflight: int
    max_body: int
    extensions: bool
    idle_timeout_s: int
    grace_s: float
    reuse_port: bool
    options: ServerOptions  # for rest_protocol.guarded_protocol: header/body timeouts, connection cap
    traffic_push: str = "enabled"  # PUT /api/traffic: allowed as --model_config_reload_api allows reloads

    @classmethod
    def from_options(cls, opts: ServerOptions, *, reuse_port: bool) -> "RestSettings":
        return cls(opts.rest_api_bind_address, opts.rest_api_port, max(1, opts.rest_api_num_threads),
                   opts.rest_api_timeout_in_ms / 1000 if opts.rest_api_timeout_in_ms > 0 else None,
                   opts.rest_api_enable_cors_support, max(0, opts.max_inflight_requests),
                   max(0, opts.rest_api_max_request_bytes), opts.rest_api_extensions,
                   max(1, opts.rest_api_idle_timeout_seconds), float(max(0, opts.shutdown_grace_period_seconds)),
                   reuse_port, opts, opts.model_config_reload_api)


class RestApp:
    """The ASGI application. Routing and admission (in-flight limit, body size, memory budget) happen before
    a byte of the body is read; the body is then read with those limits, and everything that costs CPU or
    memory in proportion to it (gunzip, JSON, the model) runs in the worker pool."""

    def __init__(self, core: Core, registry: ModelRegistry, lifecycle: Lifecycle, settings: RestSettings,
                 monitoring: MonitoringConfig | None = None):
        self.core, self.lifecycle = core, lifecycle
        self.metrics = core.metrics
        self.in_flight = self.metrics.in_flight("REST")
        self.handler = RestHandler(core, registry)
        self.budget = core.budget
        self.pool = ThreadPoolExecutor(max_workers=settings.num_threads, thread_name_prefix="rest")
        self.timeout = settings.timeout_s
        self.cors = settings.cors
        self.metrics_path = prometheus_path(monitoring) if monitoring is not None else None
        self.max_inflight = settings.max_inflight
        self.max_body = settings.max_body
        self.extensions = None
        if settings.extensions:
            history = History(self.metrics)
            history.start(lifecycle)
            self.extensions = extensions.Extensions(registry, history, core.traffic)
        self.traffic_push = settings.traffic_push
        self.inflight = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._running: set[asyncio.Future] = set()
        self._cut = False
        self._costs = _Costs()
        from uvicorn.loops.uvloop import uvloop_loop_factory  # the loop RestTransport runs uvicorn on

        self._costs.calibrate(self.pool, new_loop=uvloop_loop_factory())

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
            await self._send(send, 200, prometheus_text(self.metrics), ctype=b"text/plain", close=unread)
            return
        if path in ("/healthz", "/readyz") and method in ("GET", "HEAD"):
            ready = path == "/healthz" or self.lifecycle.ready()
            await self._send(send, 200 if ready else 503, b'{"status": "%s"}' % (b"ok" if ready else b"not ready"), close=unread)
            return
        if self.extensions and method in ("GET", "HEAD") and path.startswith(("/api/", "/dashboard")):
            status, out, ctype = await asyncio.get_running_loop().run_in_executor(self.pool, self.extensions.get, path)
            await self._send(send, status, out, ctype=ctype, close=unread)
            return
        if not _V1_RE.fullmatch(path) and not (self.extensions and method == "PUT" and path == extensions.TRAFFIC):
            await self._send(send, 404, _not_found_html(path), ctype=b"text/html", close=unread)
            return
        if method == "OPTIONS":
            origin = headers.get(b"origin", b"").decode("latin-1")
            await self._send(send, 200 if _ORIGIN_RE.fullmatch(origin) else 400, b"", ctype=None, close=unread)
            return
        if self.max_inflight and self.inflight >= self.max_inflight:
            err = UnavailableError(f"Server is overloaded: {self.inflight} REST requests in flight "
                                   f"(--max_inflight_requests={self.max_inflight}); retry later")
            self.metrics.request("", "", "REST", err.code.name, None)
            await self._send(send, err.http_status, error_json(err.message), close=unread, code=err.code.name)
            return
        self.inflight += 1
        self.in_flight.inc()
        held = None
        try:
            held = self._admit(headers.get(b"content-length"))
            body = await self._read_body(receive, held)
            if body is None:  # the client went away
                return
            await self._process(send, method, path, body, headers, held)
        except _Refused as r:
            self.metrics.request("", "", "REST", r.err.code.name, None)
            await self._send(send, r.err.http_status, error_json(r.err.message), close=True, code=r.err.code.name)
        finally:
            self.inflight -= 1
            self.in_flight.dec()
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
            return self.budget.reserve(n * (1 + JSON_EXPANSION), f"A JSON request body of {n} bytes",
                                       json_body=True)
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
                return error_answer(e)
        if deadline is not None and time.monotonic() > deadline:  # the client already has its 504
            return error_answer(DeadlineExceededError("Deadline Exceeded"))
        if method == "PUT" and path == extensions.TRAFFIC:
            return self.extensions.put_traffic(body, self.traffic_push)
        return self.handler.process(method, path, body)

    def _pooled_run(self, method: str, path: str, body: bytes, gzipped: bool, held,
                    deadline: float | None) -> Answer:
        t0 = time.thread_time()
        try:
            return self._run(method, path, body, gzipped, held, deadline)
        finally:
            self._costs.observe_pool(path, QUEUED if queued_here() else time.thread_time() - t0)

    def _loop_run(self, method: str, path: str, body: bytes, held) -> Answer:
        t0 = time.perf_counter()
        try:
            return self._run(method, path, body, False, held, None)
        finally:
            self._costs.observe_loop(path, QUEUED if queued_here() else time.perf_counter() - t0)

    async def _process(self, send, method: str, path: str, body: bytes, headers: dict, held) -> None:
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        is_inference = method == "POST"
        timeout = self.timeout if is_inference else None
        deadline = time.monotonic() + timeout if timeout is not None else None
        gzipped = b"gzip" in headers.get(b"content-encoding", b"")
        if method != "PUT" and not gzipped and len(body) <= INLINE_MAX_BODY and self._costs.cheap(path):
            # Small and recently fast: answering here costs less than the two thread hand-offs of the pool.
            # (A PUT writes the traffic config to disk, and a disk may stall with no CPU spent.)
            answer = self._loop_run(method, path, body, held)
            self.metrics.request(self.core.metric_model_name(answer.model), answer.api, "REST", answer.code,
                                 time.perf_counter() - t0)
            await self._send(send, answer.status, answer.body, code=answer.code, version=answer.version)
            return
        fut = loop.run_in_executor(self.pool, self._pooled_run, method, path, body, gzipped, held, deadline)
        self._running.add(fut)
        try:
            answer = await (asyncio.wait_for(fut, timeout) if timeout is not None else fut)
        except asyncio.TimeoutError:
            answer = error_answer(DeadlineExceededError("Deadline Exceeded"))
        except asyncio.CancelledError:
            if not self._cut:
                raise
            answer = error_answer(UnavailableError("Server is shutting down: the request did not finish within the "
                                                   "shutdown grace period (--shutdown_grace_period_seconds)"))
        finally:
            self._running.discard(fut)
        self.metrics.request(self.core.metric_model_name(answer.model), answer.api, "REST", answer.code,
                             time.perf_counter() - t0)
        await self._send(send, answer.status, answer.body, code=answer.code, version=answer.version)

    async def _send(self, send, status: int, body: bytes, ctype: bytes | None = _JSON[1], close: bool = False,
                    code: str = "OK", version: int | None = None) -> None:
        """`close`: the request's body was not (fully) read; closing beats reading the rest of it to discard.
        `code`: an error's canonical code, named in a header (several codes share an HTTP status).
        `version`: the model version that served an inference (a label or "latest" hides it otherwise)."""
        headers = [(b"content-length", str(len(body)).encode())]
        if code != "OK":
            headers.append((_CODE_HEADER, code.encode()))
        if version is not None:
            headers.append((_VERSION_HEADER, str(version).encode()))
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


class RestTransport:
    """The REST API served by uvicorn in a background thread (the Transport protocol)."""

    def __init__(self, core: Core, registry: ModelRegistry, lifecycle: Lifecycle, settings: RestSettings,
                 monitoring: MonitoringConfig | None = None):
        self.settings = settings
        self.app = RestApp(core, registry, lifecycle, settings, monitoring)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.bind_address}:{self.settings.port}"

    def start(self) -> None:
        """Returns once the port accepts connections."""
        import uvicorn

        from tfsb.server.rest_protocol import guarded_protocol

        s = self.settings
        config = uvicorn.Config(self.app, host=s.bind_address, port=s.port, loop="uvloop",
                                http=guarded_protocol(s.options), ws="none", lifespan="off", log_level="warning",
                                access_log=False, server_header=False, date_header=False,
                                timeout_keep_alive=s.idle_timeout_s, timeout_graceful_shutdown=s.grace_s + 2)
        self._server = uvicorn.Server(config)
        sockets = [_reuse_port_socket(s.bind_address, s.port)] if s.reuse_port else None  # sibling workers
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": sockets}, name="rest",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise InternalError(f"Failed to start HTTP/REST server on port {s.port}")
            time.sleep(0.01)
        log.info("Exporting HTTP/REST API at:%s:%d ...", s.bind_address, s.port)

    def drain(self, grace: float) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        self._thread.join(grace)
        if self._thread.is_alive() and self.app.loop is not None:
            self.app.loop.call_soon_threadsafe(self.app.cut_off)
            self._thread.join(2)
        self.app.pool.shutdown(wait=False, cancel_futures=True)
