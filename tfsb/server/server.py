"""Process wiring in TF Serving's order (`model_servers/server.cc::BuildAndStart`): validate options, build
the config, load every model, *then* open the gRPC port (and the REST port). Shutdown drains in-flight
requests before unloading."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from tfsb.server import workers
from tfsb.server.admission import MemoryBudget
from tfsb.server.config import ModelServerConfig, MonitoringConfig, parse_text_file, single_model_config
from tfsb.server.core import Core, Inference
from tfsb.errors import InvalidArgumentError, ServingError
from tfsb.server.flags import ServerOptions, unsupported_settings
from tfsb.server.lifecycle import Lifecycle
from tfsb.server.metrics import Metrics
from tfsb.server.platform import Loader, load_settings
from tfsb.server.ports import check_ports
from tfsb.server.registry import ModelRegistry
from tfsb.server.tls import server_credentials
from tfsb.server.traffic import Traffic
from tfsb.server.transport import Transport
from tfsb.server.versions import LoadPolicy, VersionRecord

log = logging.getLogger("tfsb.server")
SHARED_TRAFFIC_POLL_S = 0.2  # how soon sibling worker processes follow a traffic config PUT to one of them


@dataclass
class Server:
    """A running server: its options, models, core, lifecycle and transports. Built by `build_and_start`;
    the transports are made from the parts they use and never see this object."""

    options: ServerOptions
    registry: ModelRegistry
    core: Core
    lifecycle: Lifecycle
    control: workers.SharedControl | None = None  # --num_server_processes > 1
    transports: list[Transport] = field(default_factory=list)

    def stop(self, grace: float = 20.0) -> None:
        """Readiness goes false first; then both transports stop accepting and let in-flight requests
        finish until `grace` s have passed (in parallel); requests still running then are answered
        UNAVAILABLE by their transport; then every version unloads. Bounded by `grace` + a few seconds."""
        self.lifecycle.shutdown(grace, unload=self.registry.stop)

    @property
    def stopping(self) -> bool:
        return self.lifecycle.stopping

    @property
    def stopped(self) -> threading.Event:
        return self.lifecycle.stopped

    def wait(self, timeout: float | None = None) -> bool:
        """True once shutdown has begun."""
        return self.lifecycle.wait(timeout)


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
    if opts.num_server_processes > 1 and opts.grpc_socket_path:
        raise InvalidArgumentError("--grpc_socket_path cannot be shared by --num_server_processes="
                                   f"{opts.num_server_processes} worker processes; use the TCP port")
    if opts.model_config_reload_api not in ("enabled", "unix_socket_only", "disabled"):
        raise InvalidArgumentError(f"--model_config_reload_api must be enabled, unix_socket_only or disabled, "
                                   f"not '{opts.model_config_reload_api}'")


def load_config(opts: ServerOptions) -> ModelServerConfig:
    if opts.model_config_file:
        return parse_text_file(opts.model_config_file, ModelServerConfig)
    log.info("Building single TensorFlow model file config: model_name: %s model_base_path: %s",
             opts.model_name, opts.model_base_path)
    return single_model_config(opts.model_name, opts.model_base_path)


def build_and_start(opts: ServerOptions) -> Server:
    """Everything before the ports open can fail with a ServingError: the caller prints
    `Failed to start server. Error: <status>` and exits 255, like tensorflow_model_server."""
    _check_flags(opts)
    check_ports(opts, share=workers.is_worker())  # before minutes of model loading, not after
    config = load_config(opts)
    monitoring = _monitoring(opts)  # every config file is read before minutes of model loading
    creds = server_credentials(opts)  # and a TLS mistake is named before them, not after
    server = build(opts)
    if opts.traffic_config_file:
        try:
            server.core.traffic.load_file(opts.traffic_config_file)
        except OSError as e:
            raise InvalidArgumentError(f"--traffic_config_file {opts.traffic_config_file}: {e.strerror}") from None
    _raise_open_file_limit()
    if workers.is_worker():
        server.control = workers.SharedControl(server.registry, float(max(0, opts.model_config_reload_wait_seconds)))
        server.control.start_on(config)  # a replacement serves what its siblings serve, not the file
    else:
        server.registry.apply(config)  # blocks until every model's first version is AVAILABLE or failed
    server.registry.start_polling()
    _start_config_poller(server)
    if opts.traffic_config_file and opts.traffic_config_poll_seconds > 0:
        server.core.traffic.watch(opts.traffic_config_file, opts.traffic_config_poll_seconds, server.lifecycle)
    shared = server.core.traffic.shared_path
    if shared:  # a sibling's PUT /api/traffic (a replacement worker starts on the newest one)
        if os.path.exists(shared):
            server.core.traffic.load_file(shared)
        server.core.traffic.watch(shared, SHARED_TRAFFIC_POLL_S, server.lifecycle)
    shared = server.control is not None  # sibling worker processes share the ports
    from tfsb.server.grpc_transport import GrpcSettings, GrpcTransport

    server.transports.append(GrpcTransport(server.core, server.registry, server.lifecycle,
                                           GrpcSettings.from_options(opts, reuse_port=shared), credentials=creds,
                                           on_reloaded=server.control.reloaded if shared else None))
    if opts.rest_api_port:
        if opts.rest_api_port == opts.port:
            log.error("server_options.http_port cannot be the same as server_options.grpc_port. "
                      "Please use a different port for HTTP/REST API. Skipped setting up HTTP/REST API.")
        else:
            from tfsb.server.rest import RestSettings, RestTransport

            server.transports.append(RestTransport(server.core, server.registry, server.lifecycle,
                                                   RestSettings.from_options(opts, reuse_port=shared), monitoring))
    for transport in server.transports:
        transport.start()
        server.lifecycle.on_drain(transport.drain)
    server.lifecycle.on_drain(lambda _grace: server.core.traffic.stop())
    server.lifecycle.serving()
    for name in server.registry.names():
        log.info("model %s: AVAILABLE versions %s", name, server.registry.model(name).available())
    if server.control is not None:
        workers.start_watching(server.control, server.lifecycle)
        server.control.ready()
        log.info("worker %d of %d serving", server.control.index, server.control.count)
    return server


def build(opts: ServerOptions) -> Server:
    """The server's parts, wired, with nothing loaded and no port open: the registry loads through the
    platform loader, whose warmup replays through the same `Inference` the core serves with; version events
    feed the metrics and the lifecycle's readiness listeners."""
    settings = load_settings(opts)
    # --num_server_processes: the supervisor gave each worker the directory every worker's samples go to
    metrics = Metrics(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    inference = Inference(metrics, method_name_check=opts.enable_signature_method_name_check)
    interval = opts.load_retry_interval_micros / 1e6

    def on_event(model: str, rec: VersionRecord) -> None:  # only after apply(), when `lifecycle` exists
        metrics.version_state(model, rec.version, int(rec.state))
        lifecycle.changed()

    registry = ModelRegistry(loader_for=Loader(settings, inference).for_platform,
                             load_policy=LoadPolicy(max(0, opts.max_num_load_retries), max(0.0, interval)),
                             poll_seconds=opts.file_system_poll_wait_seconds,
                             allow_unavailable_labels=opts.allow_version_labels_for_unavailable_models,
                             on_event=on_event, on_removed=metrics.forget_model, platforms=frozenset(settings))
    lifecycle = Lifecycle(models_available=registry.all_models_available)
    traffic = Traffic(metrics, registry.labels, shared_path=workers.shared_file("traffic.json"))
    core = Core(registry, inference, budget=MemoryBudget(opts.request_memory_budget_bytes), traffic=traffic)
    return Server(opts, registry, core, lifecycle)


def _check_flags(opts: ServerOptions) -> None:
    ignored, fatal = unsupported_settings(opts)
    if fatal:
        raise InvalidArgumentError(f"not supported by the embedded server (use the tensorflow/serving image): "
                                   f"{', '.join(fatal)}")
    for flag in ignored:
        log.warning("flag %s is accepted for compatibility but has no effect in the embedded server", flag)
    validate_options(opts)


def _monitoring(opts: ServerOptions) -> MonitoringConfig | None:
    if opts.monitoring_config_file and opts.rest_api_port:
        return parse_text_file(opts.monitoring_config_file, MonitoringConfig)
    return None


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
        while not server.lifecycle.wait(opts.model_config_file_poll_wait_seconds):
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
                continue
            if server.control is not None:  # a worker started later must start on this config, not an older one
                server.control.publish(cfg)

    threading.Thread(target=loop, name="config-poll", daemon=True).start()
