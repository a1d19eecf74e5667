"""The tensorflow_model_server command line, parsed the way TensorFlow's `command_line_flags.cc` does.

Same names, types, defaults and syntax (`--name=value` only; bools also as bare `--name`; `--name value`
leaves `value` as an unknown argument). The result is one frozen `ServerOptions`: the only place settings
come from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, make_dataclass
from typing import Any

_CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str  # bool | int32 | int64 | float | string
    default: Any
    help: str
    # True when the embedded server implements the flag; False: accepted, logged if set, no effect.
    # "fatal": setting it would change what clients see (e.g. TLS), so start-up refuses it.
    supported: bool | str = True


FLAGS: tuple[Flag, ...] = (
    Flag("port", "int32", 8500, "TCP port to listen on for gRPC API. Disabled if port set to zero."),
    Flag("grpc_socket_path", "string", "", "If non-empty, listen to a UNIX socket for gRPC API on the given path."),
    Flag("rest_api_port", "int32", 0, "Port to listen on for HTTP/REST API. Zero disables it."),
    Flag("rest_api_num_threads", "int32", 4 * _CPUS, "Number of threads for HTTP/REST API processing."),
    Flag("rest_api_timeout_in_ms", "int32", 30000, "Timeout for HTTP/REST API calls."),
    Flag("rest_api_enable_cors_support", "bool", False, "Enable CORS headers in response."),
    Flag("enable_batching", "bool", False, "enable batching"),
    Flag("allow_version_labels_for_unavailable_models", "bool", False,
         "If true, allows assigning unused version labels to models that are not available yet."),
    Flag("batching_parameters_file", "string", "", "If non-empty, read an ascii BatchingParameters protobuf."),
    Flag("enable_per_model_batching_parameters", "bool", False,
         "Enables model specific batching params like batch sizes, timeouts, batching feature flags."),
    Flag("model_config_file", "string", "", "If non-empty, read an ascii ModelServerConfig protobuf."),
    Flag("model_config_file_poll_wait_seconds", "int32", 0, "Interval in seconds between each poll of the "
         "filesystem for model_config_file. If unset or set to zero, poll will be done exactly once."),
    Flag("model_name", "string", "default", "name of model (ignored if --model_config_file flag is set)"),
    Flag("model_base_path", "string", "", "path to export (ignored if --model_config_file flag is set)"),
    # Not implemented: every model loads and unloads on a thread of its own (a slow model never holds others).
    Flag("num_load_threads", "int32", 0, "The number of threads in the thread-pool used to load servables.",
         False),
    Flag("num_unload_threads", "int32", 0, "The number of threads in the thread-pool used to unload servables.",
         False),
    Flag("max_num_load_retries", "int32", 5, "maximum number of times it retries loading a model after the "
         "first failure, before giving up."),
    Flag("load_retry_interval_micros", "int64", 60 * 1000 * 1000,
         "The interval, in microseconds, between each servable load retry."),
    Flag("file_system_poll_wait_seconds", "int32", 1, "Interval in seconds between each poll of the "
         "filesystem for new model version. If set to zero poll will be exactly done once and not "
         "periodically. Setting this to negative value will disable polling entirely."),
    Flag("flush_filesystem_caches", "bool", True, "Flush filesystem caches after initial load.", False),
    Flag("tensorflow_session_parallelism", "int64", 0, "Number of threads to use for running a TF session."),
    Flag("tensorflow_session_config_file", "string", "", "If non-empty, read an ascii TensorFlow Session "
         "ConfigProto protobuf from the supplied file name."),
    Flag("tensorflow_intra_op_parallelism", "int64", 0, "Number of threads to use to parallelize the "
         "execution of an individual op."),
    Flag("tensorflow_inter_op_parallelism", "int64", 0, "Controls the number of operators that can be "
         "executed simultaneously."),
    Flag("use_alts_credentials", "bool", False, "Use Google ALTS credentials", "fatal"),
    Flag("ssl_config_file", "string", "", "If non-empty, read an ascii SSLConfig protobuf."),
    Flag("platform_config_file", "string", "", "If non-empty, read an ascii PlatformConfigMap protobuf."),
    Flag("per_process_gpu_memory_fraction", "float", 0.0, "Fraction that each process occupies of the GPU "
         "memory space."),
    Flag("saved_model_tags", "string", "serve", "Comma-separated set of tags corresponding to the meta "
         "graph def to load from SavedModel."),
    Flag("grpc_channel_arguments", "string", "", "A comma separated list of arguments to be passed to the "
         "grpc server. (e.g. grpc.max_connection_age_ms=2000)"),
    Flag("grpc_max_threads", "int32", 4 * _CPUS, "Max grpc server threads to handle grpc messages."),
    Flag("enable_model_warmup", "bool", True, "Enables model warmup, which triggers lazy initializations "
         "(such as TF optimizations) at load time, to reduce first request latency."),
    Flag("num_request_iterations_for_warmup", "int32", 0, "Number of times a request is iterated during "
         "warmup replay. This value is used only if > 0."),
    Flag("version", "bool", False, "Display version"),
    Flag("monitoring_config_file", "string", "", "If non-empty, read an ascii MonitoringConfig protobuf."),
    Flag("remove_unused_fields_from_bundle_metagraph", "bool", True, "Removes unused fields from "
         "MetaGraphDef proto message to save memory.", False),
    Flag("prefer_tflite_model", "bool", False, "EXPERIMENTAL; Prefer TensorFlow Lite model."),
    Flag("num_tflite_pools", "int32", _CPUS, "EXPERIMENTAL; Number of TFLite interpreters pools."),
    Flag("num_tflite_interpreters_per_pool", "int32", 1, "EXPERIMENTAL; Number of TFLite interpreters "
         "per pool."),
    Flag("enable_signature_method_name_check", "bool", False, "Enable method_name check for SignatureDef."),
    Flag("xla_cpu_compilation_enabled", "bool", False, "EXPERIMENTAL; CPU JIT compilation.", False),
    Flag("xla_gpu_compilation_enabled", "bool", False, "EXPERIMENTAL; GPU JIT compilation.", False),
    Flag("enable_profiler", "bool", True, "Enable profiler service."),
    Flag("thread_pool_factory_config_file", "string", "", "Thread pool factory config.", False),
    Flag("mixed_precision", "string", "", "Mixed precision (bfloat16).", False),
    Flag("skip_initialize_tpu", "bool", False, "Whether to skip TPU initialization.", False),
    Flag("enable_grpc_healthcheck_service", "bool", False, "Enable the standard gRPC healthcheck service."),
    Flag("enable_serialization_as_tensor_content", "bool", False,
         "Enable serialization of predict response as tensor content."),
    # Extensions of the embedded server (not tensorflow_model_server flags): overload and size protection.
    Flag("max_inflight_requests", "int32", 256, "[embedded server] Requests processed at once per transport; "
         "beyond it gRPC answers RESOURCE_EXHAUSTED and REST 503 at once instead of queueing. 0 = unbounded."),
    Flag("rest_api_max_request_bytes", "int64", 512 * 1024 * 1024, "[embedded server] Largest REST request "
         "body; larger ones are answered 429 RESOURCE_EXHAUSTED without being read. 0 = unbounded."),
    Flag("shutdown_grace_period_seconds", "int32", 20, "[embedded server] How long SIGTERM waits for in-flight "
         "requests to finish; those still running then are answered UNAVAILABLE/503 and the process exits "
         "within a few seconds more."),
    Flag("request_memory_budget_bytes", "int64", 384 * 1024 * 1024, "[embedded server] Memory that requests in "
         "flight may hold together (bodies, decompressed bodies, parsed JSON, decoded tensors), reserved before "
         "it is allocated; beyond it requests get RESOURCE_EXHAUSTED/429. 0 = unbounded."),
    Flag("grpc_max_receive_message_bytes", "int32", 64 * 1024 * 1024, "[embedded server] Largest gRPC request "
         "message; --grpc_channel_arguments=grpc.max_receive_message_length=N overrides it."),
    Flag("grpc_bind_address", "string", "0.0.0.0", "[embedded server] Address the gRPC port listens on."),
    Flag("rest_api_bind_address", "string", "0.0.0.0", "[embedded server] Address the REST port listens on."),
    Flag("model_config_reload_api", "string", "enabled", "[embedded server] ModelService/HandleReloadConfigRequest: "
         "enabled | unix_socket_only (only over --grpc_socket_path) | disabled."),
    Flag("traffic_config_file", "string", "", "[embedded server] Progressive delivery, outside the model config: "
         "a JSON file of shadow traffic and weighted-split labels per model (tfsb.server.traffic); re-read when it "
         "changes. Also set at run time with PUT /api/traffic (allowed as --model_config_reload_api allows reloads)."),
    Flag("traffic_config_poll_seconds", "int32", 1, "[embedded server] How often --traffic_config_file is checked "
         "for changes. 0 = read once at start-up."),
    Flag("model_config_reload_wait_seconds", "int32", 60, "[embedded server] How long a config reload waits for "
         "added models to load before answering (loading continues afterwards)."),
    Flag("rest_api_max_header_bytes", "int32", 64 * 1024, "[embedded server] Largest request line plus headers; "
         "larger requests get 431 and the connection is closed."),
    Flag("rest_api_header_timeout_seconds", "int32", 10, "[embedded server] Time a REST client has to send a "
         "request's line and headers once it starts (or connects)."),
    Flag("rest_api_body_timeout_seconds", "int32", 60, "[embedded server] Time a REST client has to send a "
         "request's whole body after its headers."),
    Flag("rest_api_idle_timeout_seconds", "int32", 30, "[embedded server] Idle keep-alive REST connections are "
         "closed after this long."),
    Flag("rest_api_extensions", "bool", True, "[embedded server] Serve the additions outside TF Serving's /v1 "
         "namespace on the REST port: /api/openapi.json (OpenAPI 3.1 with per-model schemas), /api/models (model "
         "list) and /dashboard/. /healthz and /readyz are always served."),
    Flag("num_server_processes", "int32", 1, "[embedded server] Server processes sharing the ports "
         "(SO_REUSEPORT), each with its own copy of every model (memory × N), behind one supervisor: config, "
         "reloads, labels and metrics stay consistent across them. 1 = a single process."),
    Flag("rest_api_max_connections", "int32", 1024, "[embedded server] Open REST connections; more are answered "
         "503 and closed (also capped by the open-file limit, keeping descriptors for gRPC and model loads)."),
)

_BY_NAME = {f.name: f for f in FLAGS}


_PY_TYPE = {"bool": bool, "int32": int, "int64": int, "float": float, "string": str}


def _explicitly_set(self) -> dict[str, Any]:
    """The flags whose value differs from tensorflow_model_server's default."""
    return {f.name: getattr(self, f.name) for f in FLAGS if getattr(self, f.name) != f.default}


def _values(self) -> dict[str, Any]:
    return {f.name: getattr(self, f.name) for f in FLAGS}


# One typed field per flag, generated from FLAGS so the table stays the single source: a new flag is a new
# attribute, with its type and default, and `dataclasses.replace` derives variants (the in-process tests).
ServerOptions = make_dataclass(
    "ServerOptions",
    [(f.name, _PY_TYPE[f.kind], field(default=f.default)) for f in FLAGS]
    + [("unknown", tuple[str, ...], field(default=()))],
    frozen=True, slots=True,
    namespace={"explicitly_set": _explicitly_set, "values": property(_values), "__module__": __name__,
               "__doc__": "Every tensorflow_model_server flag, by its own name, typed; `unknown`: arguments "
                          "that are not flags (TF collects them, then refuses to start)."})


class FlagError(ValueError):
    """A malformed flag value; tensorflow_model_server prints usage and exits 255."""


_INT_RE = re.compile(r"^[+-]?\d+$")


def _parse_value(flag: Flag, raw: str | None) -> Any:
    if flag.kind == "bool":
        if raw is None or raw == "true":
            return True
        if raw == "false":
            return False
        raise FlagError(f"Illegal value '{raw}' for bool flag --{flag.name}")
    if raw is None:
        raise FlagError(f"flag --{flag.name} requires a value")
    if flag.kind in ("int32", "int64"):
        if not _INT_RE.match(raw):
            raise FlagError(f"Illegal value '{raw}' for {flag.kind} flag --{flag.name}")
        v = int(raw)
        lim = 2**31 if flag.kind == "int32" else 2**63
        if not -lim <= v < lim:
            raise FlagError(f"Value '{raw}' out of range for {flag.kind} flag --{flag.name}")
        return v
    if flag.kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise FlagError(f"Illegal value '{raw}' for float flag --{flag.name}") from None
    return raw


def parse_flags(argv: list[str]) -> ServerOptions:
    """Parse `argv` (without the program name). Unknown arguments are collected, not fatal."""
    values = {f.name: f.default for f in FLAGS}
    unknown: list[str] = []
    for arg in argv:
        if not arg.startswith("--") or arg == "--":
            unknown.append(arg)
            continue
        name, eq, raw = arg[2:].partition("=")
        flag = _BY_NAME.get(name)
        if flag is None or (not eq and flag.kind != "bool"):  # `--port 9000`: TF does not apply it
            unknown.append(arg)
            continue
        values[name] = _parse_value(flag, raw if eq else None)
    return ServerOptions(**values, unknown=tuple(unknown))


def usage() -> str:
    lines = ["usage: python -m tfsb.server", "Flags:"]
    for f in FLAGS:
        default = str(f.default).lower() if f.kind == "bool" else (f'"{f.default}"' if f.kind == "string"
                                                                  else f.default)
        lines.append(f"\t--{f.name}={default}\t{f.kind}\t{f.help}")
    return "\n".join(lines)


def unsupported_settings(opts: ServerOptions) -> tuple[list[str], list[str]]:
    """Flags set to a non-default value that the embedded server does not implement: (ignored, fatal)."""
    ignored, fatal = [], []
    for name, value in opts.explicitly_set().items():
        f = _BY_NAME[name]
        if f.supported is False:
            ignored.append(f"--{name}={value}")
        elif f.supported == "fatal":
            fatal.append(f"--{name}={value}")
    return ignored, fatal
