"""Process wiring in TF Serving's order (`model_servers/server.cc::BuildAndStart`): validate options, build
the config, load every model, *then* open the gRPC port (and the REST port). Shutdown drains in-flight
requests before unloading."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from serving import metrics
from serving.config import (BatchingParameters, ModelServerConfig, MonitoringConfig, parse_text_file,
                            single_model_config)
from serving.admission import MemoryBudget
from serving.core import Core
from serving.errors import InvalidArgumentError, ServingError
from serving.flags import ServerOptions, unsupported_settings
from serving.registry import ModelRegistry
from serving.runtime import SavedModelServable, tf
from serving.versions import LoadPolicy, VersionRecord

log = logging.getLogger("serving")


@dataclass
class Server:
    options: ServerOptions
    registry: ModelRegistry
    core: Core
    grpc_server: object = None
    grpc_port: int | None = None
    health: object = None
    stoppers: list = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)

    def update_health(self) -> None:
        if self.health is None:
            return
        from grpc_health.v1 import health_pb2

        ok = self.registry.all_models_available() and not self._stop.is_set()
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for svc in ("", "ModelService", "PredictionService", "tensorflow.serving.PredictionService",
                    "tensorflow.serving.ModelService"):
            self.health.set(svc, status)

    def stop(self, grace: float = 20.0) -> None:
        """Readiness goes false first; then both transports stop accepting and let in-flight requests
        finish until `grace` s have passed (in parallel); requests still running then are answered
        UNAVAILABLE by their transport; then every version unloads. Bounded by `grace` + a few seconds."""
        if self._stop.is_set():
            return
        deadline = time.monotonic() + grace
        self._stop.set()
        self.update_health()
        waits = [threading.Thread(target=s, args=(grace,), daemon=True) for s in self.stoppers]
        if self.grpc_server is not None:
            waits.append(threading.Thread(target=lambda: self.grpc_server.stop(grace).wait(grace + 1), daemon=True))
        for t in waits:
            t.start()
        for t in waits:
            t.join(max(0.0, deadline - time.monotonic()) + 2)
        self.registry.stop(max(0.0, deadline - time.monotonic()) + 1)
        self.stopped.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once shutdown has begun."""
        return self._stop.wait(timeout)


def validate_options(opts: ServerOptions) -> None:
    """The start-up checks of server.cc, in its order, with its messages."""
    if opts.port == 0 and not opts.grpc_socket_path:
        raise InvalidArgumentError("At least one of server_options.grpc_port or server_options.grpc_socket_path "
                                   "must be set.")
    if opts.use_alts_credentials and opts.ssl_config_file:
        raise InvalidArgumentError("Either use_alts_credentials must be false or ssl_config_file must be empty.")
    if not opts.model_base_path and not opts.model_config_file:
        raise InvalidArgumentError("Both server_options.model_base_path and server_options.model_config_file "
                                   "are empty!")
    if opts.model_config_reload_api not in ("enabled", "unix_socket_only", "disabled"):
        raise InvalidArgumentError(f"--model_config_reload_api must be enabled, unix_socket_only or disabled, "
                                   f"not '{opts.model_config_reload_api}'")


def load_config(opts: ServerOptions) -> ModelServerConfig:
    if opts.model_config_file:
        return parse_text_file(opts.model_config_file, ModelServerConfig)
    log.info("Building single TensorFlow model file config: model_name: %s model_base_path: %s",
             opts.model_name, opts.model_base_path)
    return single_model_config(opts.model_name, opts.model_base_path)


def session_config(opts: ServerOptions):
    t = tf()
    cfg = t.compat.v1.ConfigProto()
    if opts.tensorflow_session_config_file:
        from google.protobuf import text_format

        try:
            text_format.Parse(open(opts.tensorflow_session_config_file).read(), cfg)
        except Exception as e:  # noqa: BLE001
            raise InvalidArgumentError(f"Invalid protobuf file: '{opts.tensorflow_session_config_file}'") from e
    intra, inter, both = (opts.tensorflow_intra_op_parallelism, opts.tensorflow_inter_op_parallelism,
                          opts.tensorflow_session_parallelism)
    if intra > 0 and inter > 0 and both > 0:
        raise InvalidArgumentError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) "
            "separately. You cannot configure all.")
    if intra > 0 or inter > 0:
        cfg.intra_op_parallelism_threads = intra
        cfg.inter_op_parallelism_threads = inter
    elif both > 0:
        cfg.intra_op_parallelism_threads = both
        cfg.inter_op_parallelism_threads = both
    return cfg


def build_and_start(opts: ServerOptions) -> Server:
    """Everything before the ports open can fail with a ServingError: the caller prints
    `Failed to start server. Error: <status>` and exits 255, like tensorflow_model_server."""
    ignored, fatal = unsupported_settings(opts)
    if fatal:
        raise InvalidArgumentError(f"not supported by the embedded server (use the tensorflow/serving image): "
                                   f"{', '.join(fatal)}")
    for flag in ignored:
        log.warning("flag %s is accepted for compatibility but has no effect in the embedded server", flag)
    validate_options(opts)
    _check_ports(opts)  # before minutes of model loading, not after
    config = load_config(opts)
    if opts.batching_parameters_file and not opts.enable_batching:
        raise InvalidArgumentError("server_options.batching_parameters_file is set without setting "
                                   "server_options.enable_batching to true.")
    batcher, batch_defaults = None, None
    if opts.enable_batching:
        from serving.batching import BatchOptions, BatchScheduler

        proto = parse_text_file(opts.batching_parameters_file, BatchingParameters) \
            if opts.batching_parameters_file else BatchingParameters()
        batch_defaults = BatchOptions.from_proto(proto, default_threads=os.cpu_count() or 1)
        if not opts.enable_per_model_batching_parameters:
            batcher = BatchScheduler(batch_defaults)
            log.info("batching on: %s", batch_defaults)
    sess_cfg = session_config(opts)
    monitoring = parse_text_file(opts.monitoring_config_file, MonitoringConfig) \
        if opts.monitoring_config_file and opts.rest_api_port else None

    holder: dict[str, Server] = {}
    tags = [t.strip() for t in opts.saved_model_tags.split(",") if t.strip()]

    def loader(model: str, version: int, path: str) -> SavedModelServable:
        t0 = time.monotonic()
        try:
            servable = SavedModelServable(path, tags, session_config=sess_cfg)
        except ServingError:
            metrics.load(path, False, time.monotonic() - t0)
            raise
        metrics.load(path, True, time.monotonic() - t0)
        try:
            _attach_batcher(servable, path)
        except ServingError:
            servable.close()
            raise
        if opts.enable_model_warmup:
            from serving.warmup import run_warmup

            try:
                n = run_warmup(holder["server"].core, servable, version, path,
                               opts.num_request_iterations_for_warmup)
            except BaseException:
                servable.close()
                raise
            if n:
                log.info("model %s version %d: replayed %d warmup record(s)", model, version, n)
        return servable

    def _attach_batcher(servable: SavedModelServable, path: str) -> None:
        """Global scheduler, or with --enable_per_model_batching_parameters the version's own
        batching_params.pbtxt (no file: the version is not batched), like TF Serving."""
        if batcher is not None:
            servable.batcher = batcher
        elif batch_defaults is not None:
            per_model = os.path.join(path, "batching_params.pbtxt")
            if os.path.exists(per_model):
                from serving.batching import BatchOptions, BatchScheduler

                p = parse_text_file(per_model, BatchingParameters)
                servable.batcher = BatchScheduler(BatchOptions.from_proto(p, batch_defaults.num_batch_threads))
                servable.own_batcher = True

    def on_event(model: str, rec: VersionRecord) -> None:
        metrics.version_state(model, rec.version, int(rec.state))
        srv = holder.get("server")
        if srv is not None:
            srv.update_health()

    interval = opts.load_retry_interval_micros / 1e6
    registry = ModelRegistry(loader, load_policy=LoadPolicy(max(0, opts.max_num_load_retries), max(0.0, interval)),
                             poll_seconds=opts.file_system_poll_wait_seconds,
                             allow_unavailable_labels=opts.allow_version_labels_for_unavailable_models,
                             on_event=on_event, on_removed=metrics.forget_model)
    budget = MemoryBudget(opts.request_memory_budget_bytes)
    server = Server(opts, registry, Core(registry, method_name_check=opts.enable_signature_method_name_check,
                                         budget=budget))
    _raise_open_file_limit()
    holder["server"] = server
    registry.apply(config)  # blocks until every model's first version is AVAILABLE or failed
    registry.start_polling()
    _start_config_poller(server)
    _start_grpc(server)
    if opts.rest_api_port:
        if opts.rest_api_port == opts.port:
            log.error("server_options.http_port cannot be the same as server_options.grpc_port. "
                      "Please use a different port for HTTP/REST API. Skipped setting up HTTP/REST API.")
        else:
            from serving.rest import start_rest

            start_rest(server, monitoring)
    server.update_health()
    for name in registry.names():
        log.info("model %s: AVAILABLE versions %s", name, registry.model(name).available())
    return server


def _start_grpc(server: Server) -> None:
    from grpc_health.v1 import health

    from serving.grpc_api import build_server, parse_channel_arguments

    opts = server.options
    server.health = health.HealthServicer(experimental_non_blocking=True)
    gs = build_server(server.core, server.registry, max_workers=max(1, opts.grpc_max_threads),
                      tensor_content=opts.enable_serialization_as_tensor_content,
                      health_servicer=server.health,
                      extra_options=[("grpc.max_receive_message_length", opts.grpc_max_receive_message_bytes),
                                     *parse_channel_arguments(opts.grpc_channel_arguments)],
                      max_inflight=max(0, opts.max_inflight_requests),
                      reload_api=opts.model_config_reload_api,
                      reload_wait_s=float(max(0, opts.model_config_reload_wait_seconds)))
    if opts.port:
        try:
            server.grpc_port = gs.add_insecure_port(f"{_host_port(opts.grpc_bind_address, opts.port)}")
        except RuntimeError:  # grpcio raises when the bind fails (the port was taken since the early check)
            server.grpc_port = 0
        if not server.grpc_port:
            raise InvalidArgumentError("Failed to BuildAndStart gRPC server")
    if opts.grpc_socket_path:
        gs.add_insecure_port(f"unix:{opts.grpc_socket_path}")
    gs.start()
    server.grpc_server = gs
    if opts.port:
        log.info("Running gRPC ModelServer at %s ...", _host_port(opts.grpc_bind_address, server.grpc_port))
    if opts.grpc_socket_path:
        log.info("Running gRPC ModelServer at UNIX socket %s ...", opts.grpc_socket_path)


def _port_free(host: str, port: int) -> OSError | None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what the servers themselves will set
        try:
            s.bind((host, port))
        except OSError as e:
            return e
    return None


def _check_ports(opts: ServerOptions) -> None:
    """A port in use is reported at once, in TF Serving's words, with exit 255 (not after loading every model,
    and not as a traceback followed by an abort in TensorFlow's threads)."""
    if opts.port:
        err = _port_free(opts.grpc_bind_address, opts.port)
        if err is not None:
            log.error("gRPC port %s:%d: %s", opts.grpc_bind_address, opts.port, err.strerror)
            raise InvalidArgumentError("Failed to BuildAndStart gRPC server")
    if opts.rest_api_port and opts.rest_api_port != opts.port:
        err = _port_free(opts.rest_api_bind_address, opts.rest_api_port)
        if err is not None:
            raise InvalidArgumentError(f"Failed to start HTTP Server at {opts.rest_api_bind_address}:"
                                       f"{opts.rest_api_port}: {err.strerror}")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _raise_open_file_limit() -> None:
    """Idle REST connections must not be what runs the process out of descriptors: use the hard limit."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError) as e:
        log.warning("could not raise the open-file limit: %s", e)


def _start_config_poller(server: Server) -> None:
    """--model_config_file_poll_wait_seconds: re-read the file and reload; errors are logged, never fatal."""
    opts = server.options
    if not opts.model_config_file or opts.model_config_file_poll_wait_seconds <= 0:
        return

    def loop():
        while not server._stop.wait(opts.model_config_file_poll_wait_seconds):
            try:
                cfg = parse_text_file(opts.model_config_file, ModelServerConfig)
            except ServingError as e:
                log.error("Failed to read ModelServerConfig file: %s", e.message)
                continue
            if cfg == server.registry.config:
                continue
            try:
                server.registry.apply(cfg, wait_seconds=float(max(0, opts.model_config_reload_wait_seconds)),
                                      reload=True)
                log.info("reloaded model config from %s", opts.model_config_file)
            except ServingError as e:
                log.error("model config reload from %s failed: %s", opts.model_config_file, e)

    threading.Thread(target=loop, name="config-poll", daemon=True).start()
