"""Switch version labels through a config reload, the way TF Serving allows it.

TF Serving only lets a label point at an AVAILABLE version (unless the server runs with
--allow_version_labels_for_unavailable_models, and even then an existing label can only move to an
AVAILABLE version). So a move is done in up to two steps: first make sure the target version is in the
model's version policy and AVAILABLE, then move the label. Each step rewrites the config file atomically
(the server may be polling it) and sends `HandleReloadConfigRequest`; the tool then waits until the
server resolves every label to its new version.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from clients.base import ServingClientError
from clients.grpc_client import GrpcClient

ModelServerConfig = model_server_config_pb2.ModelServerConfig


def read_config(path: str | os.PathLike) -> ModelServerConfig:
    return text_format.Parse(Path(path).read_text(), ModelServerConfig())


def write_config(path: str | os.PathLike, cfg: ModelServerConfig) -> None:
    """Write to a temporary file in the same directory and rename: a poller never reads half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text_format.MessageToString(cfg))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _model(cfg: ModelServerConfig, name: str):
    for m in cfg.model_config_list.config:
        if m.name == name:
            return m
    raise KeyError(f"model {name!r} is not in the config")


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def _available(client: GrpcClient, model: str) -> set[int]:
    return {s["version"] for s in client.status(model) if s["state"] == "AVAILABLE"}


def _resolves(client: GrpcClient, model: str, label: str, version: int) -> bool:
    try:
        return client.metadata(model, label=label)["version"] == version
    except ServingClientError:
        return False


def set_labels(config_path: str | os.PathLike, client: GrpcClient, model: str, labels: dict[str, int], *,
               timeout: float = 120.0, log: Callable[[str], None] = lambda s: None) -> dict[str, int]:
    """Point `labels` at their versions (other labels of the model are kept); returns the new mapping."""
    cfg = read_config(config_path)
    m = _model(cfg, model)
    missing = sorted(set(labels.values()) - _available(client, model))
    if missing:
        policy = m.model_version_policy.WhichOneof("policy_choice")
        if policy != "specific":
            raise ServingClientError("FAILED_PRECONDITION",
                                     f"version(s) {missing} of {model} are not AVAILABLE and the version policy is "
                                     f"{policy or 'latest'}; publish them or use a specific policy")
        m.model_version_policy.specific.versions.extend(v for v in missing
                                                        if v not in m.model_version_policy.specific.versions)
        log(f"step 1/2: adding version(s) {missing} of {model} to its policy and waiting until AVAILABLE")
        write_config(config_path, cfg)
        client.reload_config(cfg)
        _wait(lambda: set(missing) <= _available(client, model), timeout, f"{model} versions {missing} AVAILABLE")
    new = dict(m.version_labels)
    new.update(labels)
    m.ClearField("version_labels")
    for k, v in sorted(new.items()):
        m.version_labels[k] = v
    log(f"{'step 2/2: ' if missing else ''}setting labels {labels} on {model}")
    write_config(config_path, cfg)
    client.reload_config(cfg)
    _wait(lambda: all(_resolves(client, model, k, v) for k, v in labels.items()), timeout,
          f"labels {labels} to resolve")
    return new


def promote(config_path: str | os.PathLike, client: GrpcClient, model: str, source: str = "canary",
            target: str = "stable", **kw) -> dict[str, int]:
    """Point `target` at the version `source` points to (e.g. canary → stable)."""
    m = _model(read_config(config_path), model)
    if source not in m.version_labels:
        raise KeyError(f"model {model!r} has no label {source!r}")
    return set_labels(config_path, client, model, {target: m.version_labels[source]}, **kw)
