"""Switch version labels through a config reload, the way TF Serving allows it, on every replica.

TF Serving only lets a label point at an AVAILABLE version (unless the server runs with
--allow_version_labels_for_unavailable_models, and even then an existing label can only move to an
AVAILABLE version). So a move is done in up to two steps: first make sure the target version is in the
model's version policy and AVAILABLE, then move the label.

Where the change is written decides whether it lasts. Each step edits only the model's entry (comments and
the rest of the file stay) of the config the servers run on *and* of its source of truth: a config rendered
by `python -m tfsb.export.serve_config` (`make serve`'s run/models.config) names its template in its first line,
and every re-render starts from that template, so the template is edited too. Then every replica given is
sent `HandleReloadConfigRequest` (the others pick the file up at their next config poll), and the tool
reports success only once every replica resolves every label to its new version; replicas that did not
converge are named, and the previous config files are restored and reloaded.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from google.protobuf import text_format

from tfsb.client.base import ServingClientError
from tfsb.client.grpc_client import GrpcClient
from tfsb.protos import ModelServerConfig
from tfsb.wire.config_text import source_of, update_model


def read_config(path: str | os.PathLike) -> ModelServerConfig:
    return text_format.Parse(Path(path).read_text(), ModelServerConfig())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary file in the same directory and rename: a poller never reads half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)  # readable by the server, also inside a container
    os.replace(tmp, path)


def config_files(config_path: str | os.PathLike) -> list[Path]:
    """Where a label or policy change must be written to outlive restarts and re-renders: the config the
    servers run on, and the template it was rendered from (the source of truth) when it was rendered."""
    path = Path(config_path)
    kind, where = source_of(path.read_text()) or ("", "")
    if kind == "generated":
        raise ServingClientError(
            "FAILED_PRECONDITION",
            f"{path} is generated from the model directories under {where} and rewritten by every "
            "`make serve` / `make render-config`, so a label written there would be lost: serve a config of your "
            "own (make serve MODEL_CONFIG=FILE) and label in it")
    if kind == "rendered":
        source = Path(where)
        if not source.is_file():
            raise ServingClientError("FAILED_PRECONDITION", f"{path} was rendered from {source}, which is gone: "
                                     "re-render it (make render-config) or pass --config with the source file")
        return [path, source]
    return [path]


def model_entry(cfg: ModelServerConfig, name: str):
    """The model's entry in a config (KeyError naming it when it has none)."""
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
                                         f"(e.g. python -m tfsb.export, or copy it to <base_path>/{v}/)")
        if time.monotonic() - start > timeout:
            raise ServingClientError("DEADLINE_EXCEEDED", f"version(s) {versions} of {model} not AVAILABLE after "
                                     f"{timeout:.0f}s")
        time.sleep(0.2)


def set_labels(config_path: str | os.PathLike, client: GrpcClient, model: str, labels: dict[str, int], *,
               replicas: Sequence[GrpcClient] = (), timeout: float = 120.0, appear_timeout: float = 15.0,
               log: Callable[[str], None] = lambda s: None) -> dict[str, int]:
    """Point `labels` at their versions (other labels of the model are kept) on `client`'s server and on every
    replica; returns the new mapping.

    Validated before anything is written; if a step fails or a replica does not converge within `timeout`,
    the previous config files are restored and reloaded, so a bad request never leaves a label on a version
    that does not exist, nor replicas that disagree."""
    files = config_files(config_path)
    originals = {f: f.read_text() for f in files}
    servers = list({c.target: c for c in (client, *replicas)}.values())
    cfg = read_config(config_path)
    m = model_entry(cfg, model)
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
                                 f"path {m.base_path}: publish it first (e.g. python -m tfsb.export, or copy it to "
                                 f"<base_path>/{absent[0]}/) (the previous config was restored)")
    try:
        if missing:
            def pin(entry) -> None:
                entry.model_version_policy.specific.versions.extend(
                    v for v in missing if v not in entry.model_version_policy.specific.versions)

            log(f"step 1/2: adding version(s) {missing} of {model} to its policy and waiting until AVAILABLE")
            _change(files, config_path, servers, model, pin)
            for s in servers:
                _await_versions(s, model, missing, timeout, appear_timeout)
        new = dict(m.version_labels)
        new.update(labels)

        def relabel(entry) -> None:
            entry.ClearField("version_labels")
            for k, v in sorted(new.items()):
                entry.version_labels[k] = v

        log(f"{'step 2/2: ' if missing else ''}setting labels {labels} on {model} "
            f"({', '.join(str(f) for f in files)}; {len(servers)} server(s))")
        _change(files, config_path, servers, model, relabel)
        _converge(servers, model, labels, timeout, log)
        return new
    except (ServingClientError, TimeoutError) as e:
        restore(originals, config_path, servers, log)
        if isinstance(e, ServingClientError):
            raise ServingClientError(e.code, f"{e.message} (the previous config was restored)", e.http_status) \
                from None
        raise ServingClientError("DEADLINE_EXCEEDED", f"{e} (the previous config was restored)") from None


def _change(files: list[Path], config_path, servers: list[GrpcClient], model: str, edit) -> None:
    """Edit the model's entry in every file (the served one first), then reload every server."""
    for f in files:
        write_text(f, update_model(f.read_text(), model, edit))
    _reload_all(servers, read_config(config_path))


def _reload_all(servers: list[GrpcClient], cfg: ModelServerConfig) -> None:
    """Reload every server, then name each one that refused (with the first refusal's code)."""
    failed: list[tuple[str, ServingClientError]] = []
    for s in servers:
        try:
            s.reload_config(cfg)
        except ServingClientError as e:
            failed.append((s.target, e))
    if failed:
        raise ServingClientError(failed[0][1].code, "reload failed on " + "; ".join(
            f"{target}: {e.code}: {e.message}" for target, e in failed))


def _converge(servers: list[GrpcClient], model: str, labels: dict[str, int], timeout: float,
              log: Callable[[str], None]) -> None:
    """Until every server resolves every label to its new version; names the ones that did not."""
    deadline = time.monotonic() + timeout
    pending = list(servers)
    while pending:
        pending = [s for s in pending if not all(_resolves(s, model, k, v) for k, v in labels.items())]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise ServingClientError("DEADLINE_EXCEEDED", f"{len(pending)} of {len(servers)} replica(s) did not "
                                     f"converge on {labels} within {timeout:.0f}s: "
                                     + ", ".join(s.target for s in pending))
        time.sleep(0.1)
    log(f"all {len(servers)} server(s) resolve {labels}: " + ", ".join(s.target for s in servers))


def restore(originals: dict[Path, str], config_path, servers: list[GrpcClient], log: Callable[[str], None]) -> None:
    """Write the config files back as they were and reload every server on them."""
    for path, text in originals.items():
        write_text(path, text)
    try:
        _reload_all(servers, read_config(config_path))
        log(f"restored {', '.join(str(p) for p in originals)} and reloaded them")
    except ServingClientError as e:
        log(f"restored {', '.join(str(p) for p in originals)}; reloading failed: {e.message}")


def docker_replicas(service: str, port: int = 8500) -> list[str]:
    """gRPC targets (container address:port) of the running containers of a compose service
    (`SERVICE` or `PROJECT/SERVICE`), found through the Docker engine (the docker SDK)."""
    import docker

    project, _, name = service.rpartition("/")
    filters = {"label": [f"com.docker.compose.service={name}"], "status": "running"}
    if project:
        filters["label"].append(f"com.docker.compose.project={project}")
    targets = []
    for c in docker.from_env().containers.list(filters=filters):
        ips = [n["IPAddress"] for n in c.attrs["NetworkSettings"]["Networks"].values() if n.get("IPAddress")]
        if ips:
            targets.append(f"{ips[0]}:{port}")
    if not targets:
        raise ServingClientError("NOT_FOUND", f"no running container of the compose service {service!r}")
    return sorted(targets)


def promote(config_path: str | os.PathLike, client: GrpcClient, model: str, source: str = "canary",
            target: str = "stable", **kw) -> dict[str, int]:
    """Point `target` at the version `source` points to (e.g. canary → stable)."""
    m = model_entry(read_config(config_path), model)
    if source not in m.version_labels:
        raise KeyError(f"model {model!r} has no label {source!r}")
    return set_labels(config_path, client, model, {target: m.version_labels[source]}, **kw)
