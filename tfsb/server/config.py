"""TF Serving's config files, read with protobuf classes and `google.protobuf.text_format`.

`ModelServerConfig` and `PlatformConfigMap` come from tensorflow-serving-api. `MonitoringConfig`,
`BatchingParameters`, `SSLConfig` and the SavedModel source adapter's config are not in that package: the
project's own `.proto` files (`tfsb/server/proto/`, TF Serving's names and field numbers) are compiled by
grpcio-tools (`make protos`), so text-format files written for the official server parse alike.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import urlparse

from google.protobuf import descriptor_pool, text_format
from tensorflow_serving.config import model_server_config_pb2

from tfsb.errors import FailedPreconditionError, InternalError, InvalidArgumentError, ServingError
from tfsb.server.proto.serving_config_pb2 import BatchingParameters, MonitoringConfig, SSLConfig

log = logging.getLogger("tfsb.server.config")

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig
__all__ = ["BatchingParameters", "ModelConfig", "ModelServerConfig", "MonitoringConfig", "SSLConfig"]

SAVED_MODEL_ADAPTER = "tensorflow.serving.SavedModelBundleSourceAdapterConfig"


def parse_platform_config(path: str) -> dict[str, object]:
    """--platform_config_file → {platform: SessionBundleConfig} (server_core.cc: the platforms a config may
    name are this map's keys; each entry's source adapter is created from its `Any`, and the only adapter
    linked into the model server for SavedModels is SavedModelBundleSourceAdapterConfig)."""
    # SessionBundleConfig embeds TensorFlow's ConfigProto: only a server given this flag imports it
    from tensorflow_serving.config.platform_config_pb2 import PlatformConfigMap

    from tfsb.server.proto.session_bundle_config_pb2 import SavedModelBundleSourceAdapterConfig

    pcm = parse_text_file(path, PlatformConfigMap)
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
        adapter = SavedModelBundleSourceAdapterConfig()
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
