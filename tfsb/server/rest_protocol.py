"""uvicorn's httptools protocol with the limits a server facing untrusted clients needs and uvicorn lacks:
a cap on request-line + header bytes, a time limit for receiving the headers (from connect, or from the first
byte of a keep-alive request) and for receiving the body, and a cap on open connections that answers 503 at
once (the open-file limit is shared with gRPC, polling and model loads)."""

from __future__ import annotations

import asyncio
import logging
import resource

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("tfsb.server.rest")

_FD_RESERVE = 256  # descriptors kept for gRPC connections, version polling and SavedModel loads
_TIMER_SLACK_S = 0.002  # event-loop timers have millisecond resolution: a deadline this close has come


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered to what the open-file limit leaves after the reserve (0 = only that limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    by_fds = max(16, soft - _FD_RESERVE) if soft != resource.RLIM_INFINITY else 1 << 20
    return min(wanted, by_fds) if wanted > 0 else by_fds


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = ('{ "error": "%s" }' % message).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


def guarded_protocol(opts) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's `http=` setting, with the limits taken from the server options."""
    max_head = max(0, opts.rest_api_max_header_bytes)
    head_timeout = max(0, opts.rest_api_header_timeout_seconds)
    body_timeout = max(0, opts.rest_api_body_timeout_seconds)
    max_conns = connection_cap(max(0, opts.rest_api_max_connections))

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """The header and body time limits share one timer per connection, armed lazily: a phase sets its
        deadline, and the timer is created (or moved) only when none is pending or it would fire too late.
        When it fires early (the phase it was armed for ended), it re-arms for the current deadline or
        lapses. A keep-alive request whose head and body arrive in one read, the common case, then costs no
        timer at all instead of two created and two cancelled."""

        _timer: asyncio.TimerHandle | None = None
        _deadline: tuple[float, object] | None = None  # (loop time, what to do then) of the timed phase
        _in_head = True
        _head_bytes = 0

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._since = self.loop.time()
            if len(self.connections) > max_conns and not self._evict_idle():
                self._refuse(503, "Service Unavailable", f"Too many open connections (more than {max_conns}); "
                                                         "retry later")
                return
            self._arm(head_timeout, self._head_expired)

        def _evict_idle(self) -> bool:
            """At the cap, a new client takes the place of the longest-idle connection (one that has sent
            nothing of its current request), the way nginx reuses keep-alive slots; only busy connections
            make a newcomer wait for a 503."""
            idle = [c for c in self.connections
                    if c is not self and getattr(c, "_in_head", False) and getattr(c, "_head_bytes", 1) == 0
                    and (c.cycle is None or c.cycle.response_complete)]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: getattr(c, "_since", 0.0))
            oldest._stop_timer()
            oldest.transport.close()
            self.connections.discard(oldest)
            return True

        def connection_lost(self, exc) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                if self._deadline is None:  # first byte of a keep-alive request
                    self._arm(head_timeout, self._head_expired)
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and max_head and self._head_bytes > max_head and not self.transport.is_closing():
                self._refuse(431, "Request Header Fields Too Large",
                             f"Request line and headers exceed {max_head} bytes (--rest_api_max_header_bytes)")

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._arm(body_timeout, self._body_expired)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            self._in_head, self._head_bytes, self._since = True, 0, self.loop.time()
            super().on_response_complete()

        # ---------------------------------------------------------------------------- helpers
        def _arm(self, seconds: float, fn) -> None:
            if seconds <= 0:
                self._deadline = None
                return
            when = self.loop.time() + seconds
            self._deadline = (when, fn)
            if self._timer is None or self._timer.when() > when:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self.loop.call_at(when, self._fire)

        def _disarm(self) -> None:
            """The phase ended in time; a pending timer finds nothing due and lapses (or serves the next)."""
            self._deadline = None

        def _stop_timer(self) -> None:
            """The connection is closing: nothing of it stays scheduled."""
            self._deadline = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _fire(self) -> None:
            self._timer = None
            if self._deadline is None:
                return
            when, fn = self._deadline
            if when > self.loop.time() + _TIMER_SLACK_S:  # armed for an earlier phase: wait for this one
                self._timer = self.loop.call_at(when, self._fire)
                return
            self._deadline = None
            fn()

        def _refuse(self, status: int, reason: str, message: str) -> None:
            self._stop_timer()
            if not self.transport.is_closing():
                self.transport.write(_raw_response(status, reason, message))
                self.transport.close()

        def _head_expired(self) -> None:
            if self._head_bytes == 0:  # connected (or kept alive) and never spoke: just close
                self.transport.close()
            else:
                self._refuse(408, "Request Timeout", f"Request headers not received within {head_timeout}s "
                                                     "(--rest_api_header_timeout_seconds)")

        def _body_expired(self) -> None:
            if self.cycle is not None and not self.cycle.response_started:
                self._refuse(408, "Request Timeout", f"Request body not received within {body_timeout}s "
                                                     "(--rest_api_body_timeout_seconds)")
            else:
                self.transport.close()

    return GuardedHttpToolsProtocol
