"""The gRPC transport as one object: the grpc server over the core (`grpc_api`), the standard health service
following readiness (`--enable_grpc_healthcheck_service`), the profiler (`--enable_profiler`), TCP and unix
socket listeners, drain."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import grpc

from tfsb.errors import InvalidArgumentError
from tfsb.server.core import Core
from tfsb.server.flags import ServerOptions
from tfsb.server.lifecycle import Lifecycle
from tfsb.server.ports import host_port
from tfsb.server.registry import ModelRegistry

log = logging.getLogger("tfsb.server.grpc")

_HEALTH_SERVICES = ("", "ModelService", "PredictionService", "tensorflow.serving.PredictionService",
                    "tensorflow.serving.ModelService")


@dataclass(frozen=True)
class GrpcSettings:
    bind_address: str
    port: int
    socket_path: str
    max_threads: int
    tensor_content: bool
    channel_options: tuple[tuple[str, object], ...]
    max_inflight: int
    reload_api: str
    reload_wait_s: float
    health: bool
    profiler: bool
    reuse_port: bool

    @classmethod
    def from_options(cls, opts: ServerOptions, *, reuse_port: bool) -> "GrpcSettings":
        from tfsb.server.grpc_api import parse_channel_arguments

        return cls(opts.grpc_bind_address, opts.port, opts.grpc_socket_path, max(1, opts.grpc_max_threads),
                   opts.enable_serialization_as_tensor_content,
                   (("grpc.max_receive_message_length", opts.grpc_max_receive_message_bytes),
                    *parse_channel_arguments(opts.grpc_channel_arguments)),
                   max(0, opts.max_inflight_requests), opts.model_config_reload_api,
                   float(max(0, opts.model_config_reload_wait_seconds)), opts.enable_grpc_healthcheck_service,
                   opts.enable_profiler, reuse_port)


class GrpcTransport:
    def __init__(self, core: Core, registry: ModelRegistry, lifecycle: Lifecycle, settings: GrpcSettings, *,
                 credentials: grpc.ServerCredentials | None = None, on_reloaded: Callable | None = None):
        self.core, self.registry, self.lifecycle, self.settings = core, registry, lifecycle, settings
        self.credentials = credentials
        self.on_reloaded = on_reloaded  # (config, seconds left): sibling worker processes apply it too
        self.port: int | None = None
        self.health = None
        self._server: grpc.Server | None = None
        self._calls = None

    @property
    def address(self) -> str:
        s = self.settings
        return host_port(s.bind_address, self.port) if self.port else f"unix:{s.socket_path}"

    def _update_health(self) -> None:
        """The health service follows readiness (a lifecycle listener)."""
        from grpc_health.v1 import health_pb2

        status = health_pb2.HealthCheckResponse.SERVING if self.lifecycle.ready() \
            else health_pb2.HealthCheckResponse.NOT_SERVING
        for svc in _HEALTH_SERVICES:
            self.health.set(svc, status)

    def start(self) -> None:
        from tfsb.server.grpc_api import CallExecutor, build_server

        s = self.settings
        if s.health:  # as in TF Serving: the standard health service only when asked
            from grpc_health.v1 import health

            self.health = health.HealthServicer(experimental_non_blocking=True)
            self.lifecycle.on_change(self._update_health)
        self._calls = CallExecutor(s.max_threads)
        gs = build_server(self.core, self.registry, max_workers=s.max_threads, executor=self._calls,
                          on_reloaded=self.on_reloaded, reuse_port=s.reuse_port, tensor_content=s.tensor_content,
                          health_servicer=self.health, extra_options=list(s.channel_options),
                          max_inflight=s.max_inflight, reload_api=s.reload_api, reload_wait_s=s.reload_wait_s)
        if s.profiler:
            from tfsb.server import profiler

            profiler.register(gs, self.lifecycle)
            log.info("Profiler service is enabled")
        if s.port:
            self.port = self._listen(gs, host_port(s.bind_address, s.port))
            if not self.port:
                raise InvalidArgumentError("Failed to BuildAndStart gRPC server")
        if s.socket_path and not self._listen(gs, f"unix:{s.socket_path}"):
            raise InvalidArgumentError("Failed to BuildAndStart gRPC server")
        gs.start()
        self._server = gs
        if s.port:
            log.info("Running gRPC ModelServer at %s ...", self.address)
        if s.socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", s.socket_path)

    def _listen(self, gs: grpc.Server, address: str) -> int:
        try:
            return gs.add_secure_port(address, self.credentials) if self.credentials is not None \
                else gs.add_insecure_port(address)
        except RuntimeError:  # grpcio raises when the bind fails (the port was taken since the early check)
            return 0

    def drain(self, grace: float) -> None:
        from tfsb.server.grpc_api import drain

        if self._server is not None:
            drain(self._server, self._calls, grace)
