"""TF Serving's config files, read with the real protobuf classes and `google.protobuf.text_format`.

`ModelServerConfig` comes from tensorflow-serving-api. `MonitoringConfig`, `BatchingParameters`, `SSLConfig` and
the platform config are not in that package, so their schemas (field names and numbers from TF Serving's
`config/monitoring_config.proto`, `config/ssl_config.proto`, `config/platform_config.proto`,
`servables/tensorflow/session_bundle_config.proto` and `saved_model_bundle_source_adapter.proto`) are declared
here as descriptors and registered in the default pool; text_format then parses them (`Any` included) like any
generated class.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import urlparse

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import FailedPreconditionError, InternalError, InvalidArgumentError, ServingError

log = logging.getLogger("serving.config")

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

_F = descriptor_pb2.FieldDescriptorProto


def _declare() -> tuple[type, type]:
    pool = descriptor_pool.Default()
    name = "tf_serving_bundle/serving_configs.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        fdp = descriptor_pb2.FileDescriptorProto(name=name, package="tensorflow.serving", syntax="proto3",
                                                 dependency=[wrappers_pb2.DESCRIPTOR.name])
        prom = fdp.message_type.add(name="PrometheusConfig")
        prom.field.add(name="enable", number=1, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
        prom.field.add(name="path", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
        mon = fdp.message_type.add(name="MonitoringConfig")
        mon.field.add(name="prometheus_config", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                      type_name=".tensorflow.serving.PrometheusConfig")
        bp = fdp.message_type.add(name="BatchingParameters")
        for fname, num, wrapper in (("max_batch_size", 1, "Int64Value"), ("batch_timeout_micros", 2, "Int64Value"),
                                    ("max_enqueued_batches", 3, "Int64Value"),
                                    ("num_batch_threads", 4, "Int64Value"),
                                    ("thread_pool_name", 5, "StringValue"),
                                    ("enable_large_batch_splitting", 8, "BoolValue"),
                                    ("max_execution_batch_size", 9, "Int64Value")):
            bp.field.add(name=fname, number=num, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                         type_name=f".google.protobuf.{wrapper}")
        bp.field.add(name="allowed_batch_sizes", number=6, type=_F.TYPE_INT64, label=_F.LABEL_REPEATED)
        bp.field.add(name="pad_variable_length_inputs", number=7, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
        ssl = fdp.message_type.add(name="SSLConfig")
        for fname, num in (("server_key", 1), ("server_cert", 2), ("custom_ca", 3)):
            ssl.field.add(name=fname, number=num, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
        ssl.field.add(name="client_verify", number=4, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
        pool.Add(fdp)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
                 for n in ("MonitoringConfig", "BatchingParameters", "SSLConfig"))


MonitoringConfig, BatchingParameters, SSLConfig = _declare()

SAVED_MODEL_ADAPTER = "tensorflow.serving.SavedModelBundleSourceAdapterConfig"


def _declare_platform_config() -> tuple[type, type]:
    """PlatformConfigMap and the SavedModel source adapter's config. Separate from `_declare` because
    SessionBundleConfig embeds TensorFlow's ConfigProto: importing it imports TensorFlow, which only the
    server (not the clients) should pay for."""
    from google.protobuf import any_pb2
    from tensorflow.core.protobuf import config_pb2, named_tensor_pb2

    pool = descriptor_pool.Default()
    name = "tf_serving_bundle/platform_configs.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        fdp = descriptor_pb2.FileDescriptorProto(
            name=name, package="tensorflow.serving", syntax="proto3",
            dependency=[wrappers_pb2.DESCRIPTOR.name, any_pb2.DESCRIPTOR.name, config_pb2.DESCRIPTOR.name,
                        named_tensor_pb2.DESCRIPTOR.name, "tf_serving_bundle/serving_configs.proto"])
        opt = _F.LABEL_OPTIONAL

        def msg_field(m, fname, num, type_name, label=opt):
            m.field.add(name=fname, number=num, type=_F.TYPE_MESSAGE, label=label, type_name=type_name)

        warm = fdp.message_type.add(name="ModelWarmupOptions")
        msg_field(warm, "num_request_iterations", 1, ".google.protobuf.Int32Value")
        msg_field(warm, "num_model_warmup_threads", 2, ".google.protobuf.Int32Value")
        warm.field.add(name="model_name", number=3, type=_F.TYPE_STRING, label=opt)
        warm.field.add(name="model_version", number=4, type=_F.TYPE_INT64, label=opt)
        warm.field.add(name="enable_all_batch_sizes_warmup", number=5, type=_F.TYPE_BOOL, label=opt)
        sb = fdp.message_type.add(name="SessionBundleConfig")
        sb.field.add(name="session_target", number=1, type=_F.TYPE_STRING, label=opt)
        msg_field(sb, "session_config", 2, ".tensorflow.ConfigProto")
        msg_field(sb, "batching_parameters", 3, ".tensorflow.serving.BatchingParameters")
        msg_field(sb, "session_run_load_threadpool_index", 4, ".google.protobuf.Int32Value")
        sb.field.add(name="experimental_transient_ram_bytes_during_load", number=5, type=_F.TYPE_UINT64, label=opt)
        sb.field.add(name="saved_model_tags", number=6, type=_F.TYPE_STRING, label=_F.LABEL_REPEATED)
        msg_field(sb, "experimental_fixed_input_tensors", 778, ".tensorflow.NamedTensorProto", _F.LABEL_REPEATED)
        for fname, num in (("enable_model_warmup", 779), ("enable_session_metadata", 781),
                           ("remove_unused_fields_from_bundle_metagraph", 782), ("prefer_tflite_model", 783),
                           ("resource_estimation_uses_validation_result", 784),
                           ("wrap_session_with_no_threading_params", 788),
                           ("enable_per_model_batching_params", 789), ("enable_saved_model_config", 790)):
            sb.field.add(name=fname, number=num, type=_F.TYPE_BOOL, label=opt)
        msg_field(sb, "model_warmup_options", 780, ".tensorflow.serving.ModelWarmupOptions")
        for fname, num in (("num_tflite_interpreters", 785), ("num_tflite_interpreters_per_pool", 786),
                           ("num_tflite_pools", 787)):
            sb.field.add(name=fname, number=num, type=_F.TYPE_INT32, label=opt)
        sb.field.add(name="mixed_precision", number=791, type=_F.TYPE_STRING, label=opt)
        adapter = fdp.message_type.add(name="SavedModelBundleSourceAdapterConfig")
        msg_field(adapter, "legacy_config", 1000, ".tensorflow.serving.SessionBundleConfig")
        pc = fdp.message_type.add(name="PlatformConfig")
        msg_field(pc, "source_adapter_config", 1, ".google.protobuf.Any")
        pcm = fdp.message_type.add(name="PlatformConfigMap")
        entry = pcm.nested_type.add(name="PlatformConfigsEntry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=opt)
        msg_field(entry, "value", 2, ".tensorflow.serving.PlatformConfig")
        msg_field(pcm, "platform_configs", 1, ".tensorflow.serving.PlatformConfigMap.PlatformConfigsEntry",
                  _F.LABEL_REPEATED)
        pool.Add(fdp)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
                 for n in ("PlatformConfigMap", "SavedModelBundleSourceAdapterConfig"))


def parse_platform_config(path: str) -> dict[str, object]:
    """--platform_config_file → {platform: SessionBundleConfig} (server_core.cc: the platforms a config may
    name are this map's keys; each entry's source adapter is created from its `Any`, and the only adapter
    linked into the model server for SavedModels is SavedModelBundleSourceAdapterConfig)."""
    platform_map_cls, adapter_cls = _declare_platform_config()
    pcm = parse_text_file(path, platform_map_cls)
    out: dict[str, object] = {}
    for platform, pc in sorted(pcm.platform_configs.items()):
        anyc = pc.source_adapter_config
        type_name = anyc.type_url.rpartition("/")[2]
        if not anyc.type_url or "/" not in anyc.type_url or not type_name:
            raise InvalidArgumentError(f"Invalid type_url for Any: '{anyc.type_url}'")
        try:
            descriptor_pool.Default().FindMessageTypeByName(type_name)
        except KeyError:
            raise InternalError(f"Unable to find compiled-in proto descriptor of type {type_name}") from None
        if type_name != SAVED_MODEL_ADAPTER:
            raise InvalidArgumentError(f"Couldn't find factory for config proto message type {type_name}\n"
                                       f"config={text_format.MessageToString(anyc)}")
        adapter = adapter_cls()
        if not anyc.Unpack(adapter):
            raise InvalidArgumentError(f"Malformed content of Any: {text_format.MessageToString(anyc)}")
        out[platform] = adapter.legacy_config
    return out


def parse_text_file(path: str | Path, message_type: type, into=None):
    """Parse a text-format proto file (into `into` when given); any failure is TF Serving's
    `Invalid protobuf file: '<path>'`, and a syntax error is first written to stderr the way protobuf's
    C++ parser reports it for tensorflow_model_server:
    `Error parsing text-format <type>: <line>:<column>: <message>`."""
    msg = message_type() if into is None else into
    try:
        return text_format.Parse(Path(path).read_text(), msg)
    except text_format.ParseError as e:
        detail = re.sub(r"^\d+:\d+ : ", "", str(e))
        where = f"{e.GetLine()}:{e.GetColumn()}: " if e.GetLine() is not None else ""
        log.error("Error parsing text-format %s: %s%s", msg.DESCRIPTOR.full_name, where, detail)
        raise InvalidArgumentError(f"Invalid protobuf file: '{path}'") from e
    except (OSError, UnicodeDecodeError) as e:
        log.error("Could not read %s file %s: %s", msg.DESCRIPTOR.full_name, path, e)
        raise InvalidArgumentError(f"Invalid protobuf file: '{path}'") from e


def single_model_config(name: str, base_path: str) -> ModelServerConfig:
    """The config tensorflow_model_server builds from --model_name/--model_base_path."""
    cfg = ModelServerConfig()
    m = cfg.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    m.model_version_policy.latest.num_versions = 1
    return cfg


def _is_absolute_or_uri(path: str) -> bool:
    if path.startswith("/"):
        return True
    u = urlparse(path)
    return bool(u.scheme) or bool(u.netloc)


def validate(new: ModelServerConfig, current: ModelServerConfig | None,
             platforms: frozenset[str] = frozenset({"tensorflow"})) -> None:
    """TF Serving's checks (server_core.cc ReloadConfig / ValidateModelConfigList), in its order. `platforms`:
    the keys of the platform config map (only "tensorflow" unless --platform_config_file names others)."""
    if current is not None and current.WhichOneof("config") is not None and new != current:
        if not (current.HasField("model_config_list") and new.HasField("model_config_list")):
            raise FailedPreconditionError("Cannot transition to requested config. It is only legal to "
                                          "transition from one ModelConfigList to another.")
    if new.HasField("custom_model_config"):
        raise InvalidArgumentError("ModelServer does not yet support custom model config.")
    seen: set[str] = set()
    old_platforms = {}
    if current is not None:
        old_platforms = {m.name: m.model_platform for m in current.model_config_list.config}
    for m in new.model_config_list.config:
        if m.name in seen:
            raise InvalidArgumentError(f"Illegal to list model {m.name} multiple times in config list")
        seen.add(m.name)
        if not _is_absolute_or_uri(m.base_path):
            raise InvalidArgumentError(f"Expected model {m.name} to have an absolute path or URI; "
                                       f"got base_path()={m.base_path}")
    for m in new.model_config_list.config:
        if m.name in old_platforms and old_platforms[m.name] and m.model_platform \
                and old_platforms[m.name] != m.model_platform:
            raise InvalidArgumentError(
                f"Illegal to change a model's platform. For model {m.name} platform was "
                f"{old_platforms[m.name]} and new platform requested is {m.model_platform}")
    for m in new.model_config_list.config:
        if m.model_type and m.model_platform:
            raise InvalidArgumentError("Illegal setting both ModelConfig::model_type (deprecated) and "
                                       "ModelConfig::model_platform.")
        if not m.model_type and not m.model_platform:
            raise InvalidArgumentError("Illegal setting neither ModelConfig::model_type (deprecated) nor "
                                       f"ModelConfig::model_platform, model name is {m.name}")
        platform = m.model_platform or ("tensorflow" if m.model_type == 1 else "other")
        if platform not in platforms:
            raise InvalidArgumentError(f"Model {m.name} requests unsupported platform {platform}")


def aspired_policy(m: ModelConfig) -> tuple[str, object]:
    """('latest', n) | ('all', None) | ('specific', frozenset) — unset means latest 1, n=0 means 1."""
    pol = m.model_version_policy
    kind = pol.WhichOneof("policy_choice")
    if kind == "all":
        return "all", None
    if kind == "specific":
        return "specific", frozenset(pol.specific.versions)
    n = pol.latest.num_versions if kind == "latest" else 1
    return "latest", max(1, n)


_VERSION_NAME = re.compile(r"^\s*[+-]?\d+$")


def parse_version_name(name: str) -> int | None:
    """absl::SimpleAtoi for int64: leading whitespace and a sign allowed; '1.0', 'v1', '0x10' are not."""
    if not _VERSION_NAME.match(name):
        return None
    v = int(name)
    return v if -(2**63) <= v < 2**63 else None


def prometheus_path(cfg) -> str | None:
    """The metrics path if Prometheus export is enabled (empty path means TF Serving's default)."""
    if not cfg.prometheus_config.enable:
        return None
    return cfg.prometheus_config.path or "/monitoring/prometheus/metrics"


__all__ = ["ModelServerConfig", "ModelConfig", "MonitoringConfig", "BatchingParameters", "SSLConfig",
           "parse_text_file", "parse_platform_config",
           "single_model_config", "validate", "aspired_policy", "parse_version_name", "prometheus_path",
           "ServingError"]
