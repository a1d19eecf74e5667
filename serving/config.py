"""TF Serving's config files, read with the real protobuf classes and `google.protobuf.text_format`.

`ModelServerConfig` comes from tensorflow-serving-api. `MonitoringConfig` and `BatchingParameters` are not in
that package, so their schemas (field names and numbers from `config/monitoring_config.proto` and
`servables/tensorflow/session_bundle_config.proto`) are declared here as descriptors and registered in the
default pool; text_format then parses them like any generated class.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import FailedPreconditionError, InvalidArgumentError, ServingError

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
        pool.Add(fdp)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")))


MonitoringConfig, BatchingParameters = _declare()


def parse_text_file(path: str | Path, message_type: type):
    """Parse a text-format proto file; any failure is TF Serving's `Invalid protobuf file: '<path>'`."""
    try:
        return text_format.Parse(Path(path).read_text(), message_type())
    except (OSError, text_format.ParseError, UnicodeDecodeError) as e:
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


def validate(new: ModelServerConfig, current: ModelServerConfig | None) -> None:
    """TF Serving's checks (server_core.cc ReloadConfig / ValidateModelConfigList), in its order."""
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
        if platform != "tensorflow":
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


__all__ = ["ModelServerConfig", "ModelConfig", "MonitoringConfig", "BatchingParameters", "parse_text_file",
           "single_model_config", "validate", "aspired_policy", "parse_version_name", "prometheus_path",
           "ServingError"]
