"""A server's life in one place: STARTING → SERVING → STOPPING → STOPPED, readiness, and the shutdown hooks
every transport registers. Transports and background loops see only this interface (`stopping`, `ready()`,
`wait()`, `on_drain()`, `on_change()`), never the server's internals.

Shutdown follows Kubernetes' contract: readiness goes false first (probes and the gRPC health service stop
sending traffic), then every transport drains in parallel within the grace period, then the models unload.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Callable

log = logging.getLogger("tfsb.server.lifecycle")


class Phase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"
    STOPPED = "stopped"


Drain = Callable[[float], None]
"""Stop accepting, let in-flight requests finish within the grace (seconds), answer the rest UNAVAILABLE."""


class Lifecycle:
    def __init__(self, models_available: Callable[[], bool] = lambda: True):
        self._models_available = models_available
        self._phase = Phase.STARTING
        self._stopping = threading.Event()
        self.stopped = threading.Event()
        self._drains: list[Drain] = []
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ state
    @property
    def stopping(self) -> bool:
        """True from the moment shutdown begins (also once stopped)."""
        return self._stopping.is_set()

    def ready(self) -> bool:
        """Readiness: serving, and every configured model has an AVAILABLE version."""
        return self._phase is Phase.SERVING and self._models_available()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until shutdown begins or `timeout` passes; True once it has begun (background loops use
        `while not lifecycle.wait(interval)`)."""
        return self._stopping.wait(timeout)

    # ------------------------------------------------------------------------------------ hooks
    def on_drain(self, drain: Drain) -> None:
        """A transport's shutdown: called once, in parallel with the others, when shutdown begins."""
        with self._lock:
            self._drains.append(drain)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Called whenever readiness may have changed (a version event, serving, shutdown)."""
        with self._lock:
            self._listeners.append(listener)
        listener()

    def changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # noqa: BLE001 - a listener must not break a version event
                log.exception("readiness listener failed")

    # ------------------------------------------------------------------------------------ transitions
    def serving(self) -> None:
        """Start-up is complete: every port is open."""
        self._phase = Phase.SERVING
        self.changed()

    def shutdown(self, grace: float, unload: Callable[[float], None] = lambda _s: None) -> bool:
        """Readiness false, drain every transport (in parallel, within `grace`), then `unload(seconds left)`.
        Bounded by `grace` plus a few seconds. False when shutdown had already begun (nothing done)."""
        with self._lock:
            if self._stopping.is_set():
                return False
            self._stopping.set()
            self._phase = Phase.STOPPING
            drains = list(self._drains)
        deadline = time.monotonic() + grace
        self.changed()
        threads = [threading.Thread(target=d, args=(grace,), name="drain", daemon=True) for d in drains]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 2)
        unload(max(0.0, deadline - time.monotonic()) + 1)
        self._phase = Phase.STOPPED
        self.stopped.set()
        return True
