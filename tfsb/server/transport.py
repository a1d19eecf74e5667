"""What the server holds of a transport (gRPC, REST): built by `server.build_and_start` from the parts it
uses (the core, the registry, the lifecycle, its own settings), started once the models are loaded, drained
at shutdown. No transport sees the `Server` object."""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    def start(self) -> None:
        """Open the port(s) and serve; returns once connections are accepted. Raises ServingError when a
        port cannot be bound (TF Serving's start-up messages)."""

    def drain(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish for up to `grace` s, then answer the rest
        UNAVAILABLE (the lifecycle calls every transport's drain in parallel)."""

    @property
    def address(self) -> str:
        """Where it listens ("host:port", or "unix:path" alone when it has no TCP port)."""
