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


def _absent_locally(base_path: str, version: int) -> bool:
    """True only when the base path is a directory this machine can read (the tool runs next to the server)
    and holds no directory for `version`; a remote or container path proves nothing, so False."""
    if "://" in base_path or not os.path.isdir(base_path):
        return False
    try:
        names = os.listdir(base_path)
    except OSError:
        return False
    return not any(n.isdigit() and int(n) == version for n in names)


def _await_versions(client: GrpcClient, model: str, versions: list[int], timeout: float, appear: float) -> None:
    """Until every version is AVAILABLE; fails early when one failed to load, or when the server has not even
    found it under the base path after `appear` seconds (it does not exist there)."""
    start = time.monotonic()
    while True:
        states = {s["version"]: s for s in client.status(model)}
        if all(states.get(v, {}).get("state") == "AVAILABLE" for v in versions):
            return
        for v in versions:
            s = states.get(v)
            if s is not None and s["state"] == "END" and s["error_message"]:
                raise ServingClientError("FAILED_PRECONDITION", f"version {v} of {model} failed to load: "
                                         f"{s['error_message']}")
            if s is None and time.monotonic() - start > appear:
                raise ServingClientError("NOT_FOUND", f"version {v} of {model} was not found by the server under "
                                         f"the model's base path within {appear:.0f}s: publish it first "
                                         f"(e.g. python -m export, or copy it to <base_path>/{v}/)")
        if time.monotonic() - start > timeout:
            raise ServingClientError("DEADLINE_EXCEEDED", f"version(s) {versions} of {model} not AVAILABLE after "
                                     f"{timeout:.0f}s")
        time.sleep(0.2)


def set_labels(config_path: str | os.PathLike, client: GrpcClient, model: str, labels: dict[str, int], *,
               timeout: float = 120.0, appear_timeout: float = 15.0,
               log: Callable[[str], None] = lambda s: None) -> dict[str, int]:
    """Point `labels` at their versions (other labels of the model are kept); returns the new mapping.

    Validated before anything is written; if a step fails, the previous config file is restored and
    reloaded, so a bad request never leaves a label on a version that does not exist."""
    original_text = Path(config_path).read_text()
    cfg = read_config(config_path)
    m = _model(cfg, model)
    for k, v in labels.items():
        if not k or v <= 0:
            raise ServingClientError("INVALID_ARGUMENT", f"bad label assignment {k}={v}: LABEL=VERSION with a "
                                     "version number > 0")
    missing = sorted(set(labels.values()) - _available(client, model))
    policy = m.model_version_policy.WhichOneof("policy_choice") or "latest"
    if missing and policy != "specific":
        raise ServingClientError(
            "FAILED_PRECONDITION",
            f"version(s) {missing} of {model} are not AVAILABLE, and under its '{policy}' version policy the server "
            f"decides which versions load (AVAILABLE now: {sorted(_available(client, model))}); label an AVAILABLE "
            "version, or switch the model to a 'specific' policy to choose versions")
    absent = [v for v in missing if _absent_locally(m.base_path, v)]
    if absent:  # nothing to wait for: the version is not on disk where the server looks
        raise ServingClientError("NOT_FOUND", f"version {absent[0]} of {model} was not found under the model's base "
                                 f"path {m.base_path}: publish it first (e.g. python -m export, or copy it to "
                                 f"<base_path>/{absent[0]}/) (the previous config was restored)")
    try:
        if missing:
            m.model_version_policy.specific.versions.extend(v for v in missing
                                                            if v not in m.model_version_policy.specific.versions)
            log(f"step 1/2: adding version(s) {missing} of {model} to its policy and waiting until AVAILABLE")
            write_config(config_path, cfg)
            client.reload_config(cfg)
            _await_versions(client, model, missing, timeout, appear_timeout)
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
    except (ServingClientError, TimeoutError) as e:
        _restore(config_path, original_text, client, log)
        if isinstance(e, ServingClientError):
            raise ServingClientError(e.code, f"{e.message} (the previous config was restored)", e.http_status) \
                from None
        raise ServingClientError("DEADLINE_EXCEEDED", f"{e} (the previous config was restored)") from None


def _restore(config_path: str | os.PathLike, text: str, client: GrpcClient, log: Callable[[str], None]) -> None:
    path = Path(config_path)
    tmp = path.with_name(f".{path.name}.restore")
    tmp.write_text(text)
    os.replace(tmp, path)
    try:
        client.reload_config(text_format.Parse(text, ModelServerConfig()))
        log(f"restored {config_path} and reloaded it")
    except ServingClientError as e:
        log(f"restored {config_path}; reloading it failed: {e.message}")


def promote(config_path: str | os.PathLike, client: GrpcClient, model: str, source: str = "canary",
            target: str = "stable", **kw) -> dict[str, int]:
    """Point `target` at the version `source` points to (e.g. canary → stable)."""
    m = _model(read_config(config_path), model)
    if source not in m.version_labels:
        raise KeyError(f"model {model!r} has no label {source!r}")
    return set_labels(config_path, client, model, {target: m.version_labels[source]}, **kw)
