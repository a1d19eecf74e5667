"""Version lifecycle: which versions are aspired (policy + filesystem source) and the per-model state
machine that loads and unloads them (START → LOADING → AVAILABLE → UNLOADING → END).

The rules are TF Serving's (`core/aspired_versions_manager.cc`, `core/availability_preserving_policy.cc`,
`sources/storage_path/file_system_storage_path_source.cc`): a new version becomes AVAILABLE before an old one
unloads; a version that fails to load keeps the old one serving; failed versions are not retried while they
stay aspired. This module knows nothing about requests' wire formats.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tfsb.server.config import ModelConfig, aspired_policy, parse_version_name
from tfsb.errors import CancelledError, NotFoundError, ServingError, UnknownError
from tfsb.server.runtime import is_complete, tree_snapshot

log = logging.getLogger("tfsb.server.versions")


class State(enum.IntEnum):
    """`ModelVersionStatus.State` numbers."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(eq=False)
class VersionRecord:
    version: int
    path: str
    state: State = State.START
    error: ServingError | None = None
    aspired: bool = True
    servable: Any = None
    inflight: int = 0


Loader = Callable[[str, int, str], Any]  # (model, version, path) -> servable with .close(); raises ServingError


@dataclass(frozen=True)
class LoadPolicy:
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 60.0


class Hold:
    """One request's hold on a version (`ModelVersions.acquire`). A class rather than a generator context
    manager: every request takes one, and the generator machinery costs more than the hold itself."""

    __slots__ = ("_cond", "_rec")

    def __init__(self, cond: threading.Condition, rec: VersionRecord):
        self._cond, self._rec = cond, rec

    def __enter__(self) -> VersionRecord:
        return self._rec

    def __exit__(self, *exc) -> None:
        rec = self._rec
        with self._cond:
            rec.inflight -= 1
            if rec.inflight == 0 and rec.state == State.UNLOADING:
                self._cond.notify_all()


class ModelVersions:
    """One model's versions and the worker thread that applies the availability-preserving policy."""

    def __init__(self, name: str, loader: Loader, policy: LoadPolicy,
                 on_event: Callable[[str, VersionRecord], None] | None = None):
        self.name = name
        self._loader = loader
        self._policy = policy
        self._on_event = on_event or (lambda m, r: None)
        self._cond = threading.Condition()
        self._records: dict[int, VersionRecord] = {}
        self._history: dict[int, VersionRecord] = {}  # every version ever seen, for status (never forgotten)
        self._ready: list[int] = []  # AVAILABLE versions, ascending
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"versions-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ inputs
    def set_aspired(self, versions: dict[int, str]) -> None:
        """The full set of versions that should be loaded now (set semantics, like each poll emits)."""
        with self._cond:
            for v, rec in list(self._records.items()):
                if v not in versions:
                    rec.aspired = False
                    if rec.state in (State.START, State.END):
                        if rec.state == State.START:
                            self._set_state(rec, State.END)
                        del self._records[v]
            for v, path in versions.items():
                rec = self._records.get(v)
                if rec is None:
                    rec = VersionRecord(v, path)
                    self._records[v] = rec
                    self._history[v] = rec
                    self._emit(rec)
                else:
                    rec.aspired = True  # re-aspired before its unload happened: keep serving it
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Unload every version (in-flight requests finish first) and end the worker."""
        with self._cond:
            self._stopping = True
        self.set_aspired({})
        self._thread.join(timeout)

    # ------------------------------------------------------------------------------------ requests
    def acquire(self, version: int | None) -> Hold:
        """Hold a version for the duration of a request, so an unload waits for it: `with mv.acquire(v) as
        rec:`. The version is taken at the call (NOT_FOUND is raised there) and given back on leaving."""
        with self._cond:
            if version is None:
                if not self._ready:
                    raise NotFoundError(f"Servable not found for request: Latest({self.name})")
                rec = self._records[self._ready[-1]]
            else:
                rec = self._records.get(version)
                if rec is None or rec.state != State.AVAILABLE:
                    raise NotFoundError(f"Servable not found for request: Specific({self.name}, {version})")
            rec.inflight += 1
        return Hold(self._cond, rec)

    def status(self) -> list[VersionRecord]:
        """Every version seen, newest first (TF Serving lists versions in descending order)."""
        with self._cond:
            return [self._history[v] for v in sorted(self._history, reverse=True)]

    def state_of(self, version: int) -> State | None:
        with self._cond:
            rec = self._history.get(version)
            return rec.state if rec else None

    def available(self) -> list[int]:
        with self._cond:
            return list(self._ready)

    def held(self) -> dict[int, str]:
        """{version: path} of the aspired versions this model is loading or serving: the ones the filesystem
        source keeps wanted by path alone (TF Serving's identity: name + version + path string)."""
        with self._cond:
            return {v: r.path for v, r in self._records.items()
                    if r.aspired and r.state in (State.START, State.LOADING, State.AVAILABLE)}

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Until no aspired version is still to load (each is AVAILABLE or failed for good)."""
        with self._cond:
            return self._cond.wait_for(lambda: not any(r.aspired and r.state in (State.START, State.LOADING)
                                                       for r in self._records.values()), timeout)

    def wait_first_done(self, timeout: float | None = None, *, first_attempt: bool = False) -> VersionRecord | None:
        """Block until some version is AVAILABLE or has failed for good (with `first_attempt`: or a first load
        attempt has failed while its retries are still pending); returns it (None on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                for rec in sorted(self._history.values(), key=lambda r: -r.version):
                    if rec.state == State.AVAILABLE or (rec.error is not None
                                                         and (first_attempt or rec.state == State.END)):
                        return rec
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    # ------------------------------------------------------------------------------------ worker
    def _emit(self, rec: VersionRecord) -> None:
        try:
            self._on_event(self.name, rec)
        except Exception:  # an observer must never break the lifecycle
            log.exception("version event observer failed")

    def _set_state(self, rec: VersionRecord, state: State, error: ServingError | None = None) -> None:
        rec.state = state
        rec.error = error
        if state == State.AVAILABLE:
            self._ready = sorted(set(self._ready) | {rec.version})
        elif rec.version in self._ready and self._records.get(rec.version) is rec:
            self._ready = [v for v in self._ready if v != rec.version]
        self._emit(rec)
        self._cond.notify_all()

    def _decide(self) -> tuple[str, VersionRecord] | None:
        recs = list(self._records.values())
        aspired = [r for r in recs if r.aspired]
        unaspired_ready = sorted((r for r in recs if not r.aspired and r.state == State.AVAILABLE),
                                 key=lambda r: r.version)
        if unaspired_ready and (not aspired or any(r.state == State.AVAILABLE for r in aspired)
                                or len(unaspired_ready) > 1):
            return "unload", unaspired_ready[0]
        new = [r for r in aspired if r.state == State.START]
        if new:
            return "load", max(new, key=lambda r: r.version)
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                action = self._decide()
                while action is None:
                    if self._stopping and not any(r.state == State.AVAILABLE for r in self._records.values()):
                        return
                    self._cond.wait()
                    action = self._decide()
            kind, rec = action
            if kind == "load":
                self._load(rec)
            else:
                self._unload(rec)

    def _load(self, rec: VersionRecord) -> None:
        with self._cond:
            self._set_state(rec, State.LOADING)
        attempt = 0
        while True:
            try:
                t0 = time.monotonic()
                servable = self._loader(self.name, rec.version, rec.path)
            except ServingError as e:
                err = e
            except Exception as e:  # noqa: BLE001 - any loader crash is a failed load, never a dead worker
                err = UnknownError(str(e))
            else:
                with self._cond:
                    rec.servable = servable
                    self._set_state(rec, State.AVAILABLE)
                log.info("model %s version %d AVAILABLE (loaded in %.2fs)", self.name, rec.version,
                         time.monotonic() - t0)
                return
            attempt += 1
            with self._cond:
                rec.error = err  # visible to wait_first_done while retries are pending
                self._cond.notify_all()
            log.error("loading model %s version %d failed (attempt %d): %s", self.name, rec.version, attempt, err)
            with self._cond:
                if attempt > self._policy.max_num_load_retries or not rec.aspired:
                    break
                if self._policy.load_retry_interval_s > 0:
                    self._cond.wait_for(lambda: not rec.aspired or self._stopping,
                                        self._policy.load_retry_interval_s)
                if not rec.aspired:
                    err = CancelledError(f"Loading of {self.name} version {rec.version} cancelled: "
                                         "no longer aspired")
                    break
        with self._cond:
            self._set_state(rec, State.END, err)
            if not rec.aspired:
                self._records.pop(rec.version, None)

    def _unload(self, rec: VersionRecord) -> None:
        with self._cond:
            self._set_state(rec, State.UNLOADING)
            self._cond.wait_for(lambda: rec.inflight == 0)
            servable = rec.servable
            rec.servable = None
        try:
            if servable is not None:
                servable.close()
        except Exception:  # noqa: BLE001
            log.exception("unloading model %s version %d", self.name, rec.version)
        with self._cond:
            self._set_state(rec, State.END)
            self._records.pop(rec.version, None)
        log.info("model %s version %d unloaded", self.name, rec.version)


# ------------------------------------------------------------------------------------ filesystem source

Held = Callable[[str], dict[int, str]]  # model -> {version: path} it is loading or serving


class FileSystemSource:
    """Polls each model's base path and emits its aspired versions (TF Serving's
    FileSystemStoragePathSource), skipping version directories that are still being written.

    A version the model already holds (`held`, given by the registry with each poll) is identified as TF
    Serving does, by version number and path
    string: a restore (`rm -rf` + `cp -r`), a symlink swap of the base path (git-sync, the kubelet's `..data`
    writer) or a rename away and back gives it new inodes and fresh mtimes, and it keeps serving. The settle
    check is only for versions never held. A held version missing from a readable base path stays wanted for
    one more poll, so a restore caught between its delete and its copy does not unload it."""

    def __init__(self, emit: Callable[[str, dict[int, str]], None], *, settle_seconds: float = 2.0):
        self._emit = emit
        self._settle = settle_seconds
        self._missing: set[str] = set()  # held paths found missing on the last poll of a readable base path
        self._pending: dict[str, tuple] = {}
        # Paths that passed the settle check once. They stay candidates for as long as the directory exists
        # (TF Serving's rule): a backup agent touching a file must never unload a served version.
        # Keyed by path, valued by the directory's inode, so a deleted-and-recreated version is checked again.
        self._admitted: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._settling: set[str] = set()  # models whose only complete versions are still settling

    @property
    def settle_seconds(self) -> float:
        return self._settle

    def settling(self, model: str) -> bool:
        """The model has no loadable version yet, only complete ones written moments ago (still settling)."""
        return model in self._settling

    def _ready_to_load(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        ident = (st.st_dev, st.st_ino)
        if self._admitted.get(path) == ident:
            return True
        if self._settled(path):
            self._admitted[path] = ident
            return True
        return False

    def _settled(self, path: str) -> bool:
        """Only for versions never admitted: complete, and unchanged since the last poll or old enough."""
        if not is_complete(path):
            if path not in self._warned:
                log.warning("version directory %s is incomplete (no saved_model.pb or variables); "
                            "waiting for it to be fully written", path)
                self._warned.add(path)
            return False
        p = Path(path)
        if not p.is_dir():
            return True
        snap = tree_snapshot(path)
        try:
            newest = max(os.stat(os.path.join(path, rel)).st_mtime for rel, _ in snap) if snap else 0
        except OSError:
            return False
        if time.time() - newest >= self._settle or self._pending.get(path) == snap:
            self._pending.pop(path, None)
            return True
        self._pending[path] = snap  # changed since last poll, or too fresh: look again next poll
        return False

    def scan(self, model: ModelConfig, held: dict[int, str] | None = None) -> dict[int, str] | None:
        """The aspired {version: path} for one model, or None when its base path cannot be read. `held`: the
        {version: path} the model is loading or serving now."""
        base = model.base_path
        try:
            children = sorted(os.listdir(base))
        except OSError as e:
            log.error("FileSystemStoragePathSource encountered a filesystem access error: Could not find "
                      "base path %s for servable %s with error %s", base, model.name, e)
            return None
        found: dict[int, str] = {}
        kind, arg = aspired_policy(model)
        for name in children:
            v = parse_version_name(name)
            if v is None:
                continue
            if v in found and kind == "all":
                log.error("duplicate version %d of %s (%s); keeping %s", v, model.name, name, found[v])
                continue
            found[v] = os.path.join(base, name)  # latest/specific: lexicographically last name wins
        present = set(found.values())
        prefix = os.path.join(base, "")
        for gone in [p for p in self._admitted if p.startswith(prefix) and p not in present]:
            del self._admitted[gone]
        held = held or {}
        candidates = {v: p for v, p in found.items() if held.get(v) == p or self._ready_to_load(p)}
        for v, p in held.items():
            if p in present:
                self._missing.discard(p)
            elif v not in found and p not in self._missing:  # gone since the last poll: one poll's grace
                self._missing.add(p)
                candidates[v] = p
                log.warning("served version %d of %s is missing from %s; still serving it unless it is "
                            "still missing on the next poll", v, model.name, base)
            else:
                self._missing.discard(p)
        if not candidates and any(p in self._pending for p in found.values()):
            self._settling.add(model.name)
        else:
            self._settling.discard(model.name)
        if not found:
            log.warning("No versions of servable %s found under base path %s. Did you forget to name your "
                        "leaf directory as a number (eg. '/1/')?", model.name, base)
        if kind == "all":
            return candidates
        if kind == "specific":
            return {v: p for v, p in candidates.items() if v in arg}
        return {v: candidates[v] for v in sorted(candidates)[-arg:]}

    def poll(self, models: list[ModelConfig], held: Held | None = None) -> None:
        with self._lock:
            for m in models:
                versions = self.scan(m, held(m.name) if held is not None else None)
                if versions is not None:
                    self._emit(m.name, versions)
