"""The set of served models: applies a ModelServerConfig (startup and every reload), owns the version
labels, and polls the filesystem. Mirrors `ServerCore::ReloadConfig` (`model_servers/server_core.cc`).

Deliberate differences from TF Serving, where its behaviour hurts users: a config naming a model whose
base path does not exist is rejected with TF Serving's "Could not find base path" error instead of
blocking start-up or the reload forever; a model whose base path exists but holds no version yet does not
block either (it loads when a version appears, and readiness stays false until then); a base path that
disappears later only stops polling of its own model; a rejected config is not stored.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from tfsb.server.config import ModelServerConfig, validate
from tfsb.errors import DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, NotFoundError, UnknownError
from tfsb.server.versions import FileSystemSource, LoadPolicy, Loader, ModelVersions, State, VersionRecord

log = logging.getLogger("tfsb.server.registry")


class ModelRegistry:
    """Models load through `loader`, or through `loader_for(platform)`: the loader of a model's
    `model_platform` (the server's), fixed for the model's lifetime (validate() refuses a change)."""

    def __init__(self, loader: Loader | None = None, *, loader_for: Callable[[str], Loader] | None = None,
                 load_policy: LoadPolicy, poll_seconds: int,
                 allow_unavailable_labels: bool = False,
                 on_event: Callable[[str, VersionRecord], None] | None = None,
                 on_removed: Callable[[str], None] | None = None,
                 platforms: frozenset[str] = frozenset({"tensorflow"})):
        if (loader is None) == (loader_for is None):
            raise TypeError("ModelRegistry needs one of loader or loader_for")
        self._loader_for = loader_for or (lambda platform: loader)
        self._platforms = platforms
        self._on_removed = on_removed or (lambda name: None)
        self._load_policy = load_policy
        self._poll_seconds = poll_seconds
        self._allow_unavailable_labels = allow_unavailable_labels
        self._on_event = on_event
        self._reload_lock = threading.Lock()  # reloads and polls are serialised, like TF Serving's
        self._models: dict[str, ModelVersions] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self.config: ModelServerConfig | None = None
        self.source = FileSystemSource(self._emit)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ lookup
    def model(self, name: str) -> ModelVersions | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return list(self._models)

    def labels(self, name: str) -> dict[str, int]:
        return dict(self._labels.get(name, {}))

    def resolve(self, name: str, version: int | None, label: str | None) -> tuple[ModelVersions, int | None]:
        if label is not None:
            labels = self._labels.get(name, {})
            if label not in labels:
                raise InvalidArgumentError(f"Unrecognized servable version label: {label}")
            version = labels[label]
        mv = self._models.get(name)
        if mv is None:
            what = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise NotFoundError(f"Servable not found for request: {what}")
        return mv, version

    def all_models_available(self) -> bool:
        """Readiness: every configured model has at least one AVAILABLE version."""
        return bool(self._models) and all(mv.available() for mv in self._models.values())

    # ------------------------------------------------------------------------------------ config
    def _held(self, name: str) -> dict[int, str]:
        mv = self._models.get(name)
        return mv.held() if mv is not None else {}

    def _emit(self, name: str, versions: dict[int, str]) -> None:
        mv = self._models.get(name)
        if mv is not None:
            mv.set_aspired(versions)

    def _compute_labels(self, cfg: ModelServerConfig) -> dict[str, dict[str, int]]:
        """TF Serving's UpdateModelVersionLabelMap rules and error text."""
        out: dict[str, dict[str, int]] = {}
        for m in cfg.model_config_list.config:
            current = self._labels.get(m.name, {})
            mv = self._models.get(m.name)
            for label, version in m.version_labels.items():
                available = mv is not None and mv.state_of(version) == State.AVAILABLE
                if available:
                    continue
                if self._allow_unavailable_labels and (label not in current or current[label] == version):
                    continue
                raise FailedPreconditionError(
                    f"Request to assign label to version {version} of model {m.name}, which is not "
                    "currently available for inference")
            if m.version_labels:
                out[m.name] = dict(m.version_labels)
        return out

    def apply(self, cfg: ModelServerConfig, wait_seconds: float | None = None, *, reload: bool = False) -> None:
        """Validate and apply a full replacement config, then wait (at most `wait_seconds`) for each added
        model's first version to load or fail (for a `reload`, a first failed attempt already answers, the
        retries go on in the background; at start-up the retries decide, as in TF Serving). Only the validation and the swap hold the registry lock:
        serving, polling and other reloads never wait on a model that is slow or broken to load."""
        with self._reload_lock:
            validate(cfg, self.config, self._platforms)
            if cfg.WhichOneof("config") is None:
                log.info("Taking no action for empty config")
                if self.config is None:
                    self.config = cfg
                return
            wanted = {m.name: m for m in cfg.model_config_list.config}
            added = [m for name, m in wanted.items() if name not in self._models]
            for m in added:  # TF Serving would block forever on these (issues #1519/#1565); refuse instead
                if "://" not in m.base_path and not os.path.isdir(m.base_path):
                    raise InvalidArgumentError(f"Could not find base path {m.base_path} for servable {m.name} with "
                                               f"error NOT_FOUND: {m.base_path} not found")
            labels = self._compute_labels(cfg)
            removed = [name for name in self._models if name not in wanted]
            for m in added:
                self._models[m.name] = ModelVersions(m.name, self._loader_for(m.model_platform or "tensorflow"),
                                                     self._load_policy, self._on_event)
            self.config = cfg
            self._labels = labels
            for name in removed:
                mv = self._models.pop(name)
                log.info("model %s removed from config; unloading its versions", name)
                threading.Thread(target=self._remove, args=(name, mv), name=f"unload-{name}", daemon=True).start()
            if self._poll_seconds >= 0 and added:
                self.source.poll(added, self._held)
                self._await_settling(added)
            waiting = [(m, self._models[m.name]) for m in added]
        self._await(waiting, wait_seconds, reload)

    def _await_settling(self, added: list) -> None:
        """A model whose versions were all written moments ago (`make export serve`, a test that exports then
        starts a server) waits here for them to settle (a few polls, bounded by the settle time), instead of
        the server opening its ports without it and answering NOT_FOUND until the next poll."""
        deadline = time.monotonic() + self.source.settle_seconds + 1.0
        interval = max(0.05, min(0.5, self.source.settle_seconds / 4))
        while True:
            waiting = [m for m in added if self.source.settling(m.name)]
            if not waiting or time.monotonic() >= deadline:
                return
            time.sleep(interval)
            self.source.poll(waiting, self._held)

    def _remove(self, name: str, mv: ModelVersions) -> None:
        mv.stop()
        if name not in self._models:  # not re-added meanwhile
            self._on_removed(name)

    @staticmethod
    def _await(waiting: list, timeout: float | None, first_attempt: bool) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        failures, pending = [], []
        for m, mv in waiting:
            if not mv.status():
                log.warning("model %s has no loadable version under %s yet; it will load when one appears",
                            m.name, m.base_path)
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            rec = mv.wait_first_done(remaining, first_attempt=first_attempt)
            if rec is None:
                pending.append(m.name)
            elif rec.error is not None and rec.state != State.AVAILABLE:
                retrying = " (retrying in the background)" if rec.state != State.END else ""
                failures.append(f"{{name: {m.name} version: {rec.version}}} due to error: {rec.error}{retrying}")
        if failures:
            raise UnknownError(f"{len(failures)} servable(s) did not become available: "
                               f"{{{', '.join(failures)}, }}")
        if pending:
            raise DeadlineExceededError(f"Config applied, but {', '.join(pending)} did not finish loading within "
                                        f"{timeout:g}s; loading continues in the background (see GetModelStatus)")

    # ------------------------------------------------------------------------------------ polling
    def poll_now(self) -> None:
        with self._reload_lock:
            if self.config is not None:
                self.source.poll(list(self.config.model_config_list.config), self._held)

    def start_polling(self) -> None:
        if self._poll_seconds <= 0 or self._poller is not None:
            return

        def loop():
            while not self._stop.wait(self._poll_seconds):
                try:
                    self.poll_now()
                except Exception:  # noqa: BLE001 - a poll failure must never stop polling
                    log.exception("filesystem poll failed")

        self._poller = threading.Thread(target=loop, name="fs-poll", daemon=True)
        self._poller.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        models = list(self._models.values())
        threads = [threading.Thread(target=mv.stop, args=(timeout,), daemon=True) for mv in models]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
