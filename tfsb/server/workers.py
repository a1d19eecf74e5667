"""`--num_server_processes=N`: N server processes on the same ports (SO_REUSEPORT), each with its own copy of
every model, behind one supervisor and one control plane.

Python runs one request at a time per process (the GIL); N processes use N cores. The kernel spreads new
connections over the processes. What must look like *one* server:

- **config**: every worker reads the same flags and `--model_config_file` (and polls it); a
  `HandleReloadConfigRequest` applied by one worker is published to the others through the control directory
  (`config.pb`, with a generation number), which each worker watches and applies; the reload answers once every
  live worker has applied it (or its wait time ran out). A worker that cannot apply it yet (a label on a
  version it is still loading) retries every poll.
- **labels and version state** follow from the same config and the same model directories.
- **metrics**: prometheus-client's multiprocess mode; the metrics endpoint of any worker shows the sum.
- **lifecycle**: SIGTERM/SIGINT to the supervisor reach every worker, which drain as one process does; a worker
  that dies after start-up is restarted; a start-up failure (bad flag, bad config) stops all with its code.
  A replacement worker opens its ports only once it has applied the newest config its siblings serve.
- **one owner**: the workers die with their supervisor (a parent-death signal, and a watchdog where there is
  none), however it dies, so orphans never keep serving an old config; a start-up refuses ports that any other
  process holds (TF Serving's port-in-use error, exit 255) instead of joining it through SO_REUSEPORT; the
  control directory is removed on every exit path (by the supervisor, by orphaned workers, and by the next
  supervisor for one whose owner lock is free).

Memory: every worker holds its own models, so model memory is × N.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tfsb.server.dirlock import OwnedDir, remove_if_abandoned
from tfsb.errors import ServingError
from tfsb.server.flags import ServerOptions
from tfsb.server.lifecycle import Lifecycle
from tfsb.server.ports import check_ports

log = logging.getLogger("tfsb.server.workers")

ENV_INDEX = "TFSB_WORKER_INDEX"
ENV_COUNT = "TFSB_WORKER_COUNT"
ENV_CONTROL = "TFSB_CONTROL_DIR"
ENV_SUPERVISOR = "TFSB_SUPERVISOR_PID"
_POLL_S = 0.2
_CONTROL_PREFIX = "tfsb-control-"
_PR_SET_PDEATHSIG = 1


def worker_index() -> int | None:
    v = os.environ.get(ENV_INDEX)
    return int(v) if v is not None else None


def shared_file(name: str) -> str | None:
    """A file in the control directory every worker process shares (None outside worker mode)."""
    return os.path.join(os.environ[ENV_CONTROL], name) if is_worker() else None


def is_worker() -> bool:
    return worker_index() is not None


# ---------------------------------------------------------------------------------------------- supervisor

def supervise(argv: list[str], opts: ServerOptions) -> int:
    """Run N workers (`python -m tfsb.server <argv>`) until SIGTERM/SIGINT; returns the exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    n = opts.num_server_processes
    try:
        check_ports(opts)  # without SO_REUSEPORT: nobody else (orphans of a dead supervisor included) holds them
    except ServingError as e:
        print(f"Failed to start server. Error: {e}", flush=True)
        return 255
    for stale in Path(tempfile.gettempdir()).glob(f"{_CONTROL_PREFIX}*"):
        if remove_if_abandoned(stale):
            log.info("removed the control directory %s of a supervisor that is gone", stale)
    owned = OwnedDir(tempfile.gettempdir(), _CONTROL_PREFIX)
    control = owned.path
    (control / "metrics").mkdir()
    stopping = threading.Event()
    children: dict[int, subprocess.Popen] = {}

    def spawn(i: int) -> None:
        env = dict(os.environ, **{ENV_INDEX: str(i), ENV_COUNT: str(n), ENV_CONTROL: str(control),
                                  ENV_SUPERVISOR: str(os.getpid()),
                                  "PROMETHEUS_MULTIPROC_DIR": str(control / "metrics")})
        children[i] = subprocess.Popen([sys.executable, "-m", "tfsb.server", *argv], env=env)
        log.info("worker %d started (pid %d)", i, children[i].pid)

    def on_signal(signum, _frame):
        if not stopping.is_set():
            log.info("signal %d: stopping %d workers", signum, len(children))
            stopping.set()
            for c in children.values():
                if c.poll() is None:
                    c.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for i in range(n):
        spawn(i)
    code = 0
    try:
        while not stopping.is_set():
            time.sleep(_POLL_S)
            for i, c in list(children.items()):
                rc = c.poll()
                if rc is None or stopping.is_set():
                    continue
                _mark_dead(control, c.pid)
                if not (control / f"ready.{i}").exists():  # never came up: a start-up error, same for all
                    log.error("worker %d failed to start (exit %d); stopping", i, rc)
                    code = rc
                    on_signal(signal.SIGTERM, None)
                    break
                log.error("worker %d (pid %d) exited with %d; restarting it", i, c.pid, rc)
                (control / f"ready.{i}").unlink(missing_ok=True)
                spawn(i)
        for c in children.values():
            try:
                rc = c.wait()
            except KeyboardInterrupt:
                rc = c.wait()
            if rc == -signal.SIGTERM:  # ended by the SIGTERM this supervisor forwarded: a requested stop
                rc = 0
            code = code or rc
    finally:
        owned.remove()
    log.info("all workers stopped")
    return code


def _mark_dead(control: Path, pid: int) -> None:
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(control / "metrics"))
    except Exception:  # noqa: BLE001 - metrics cleanup must never stop supervision
        pass


# ---------------------------------------------------------------------------------------------- worker side

def die_with_supervisor() -> None:
    """First thing in a worker: SIGTERM when the supervisor dies (Linux's parent-death signal), and a watchdog
    for platforms without one or a supervisor that died before it was set. The signal handler then stops
    this worker at once (`orphaned()`), so no orphan keeps serving an old config on the shared ports."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass

    def watchdog() -> None:
        while not orphaned():
            time.sleep(_POLL_S)
        log.error("worker %s: the supervisor is gone; stopping", worker_index())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watchdog, name="supervisor-watchdog", daemon=True).start()


def orphaned() -> bool:
    """This worker's supervisor has died (the worker was re-parented)."""
    sup = os.environ.get(ENV_SUPERVISOR)
    return sup is not None and os.getppid() != int(sup)


def remove_orphaned_control() -> None:
    """An orphan on its way out removes the control directory its dead supervisor could not."""
    if orphaned():
        shutil.rmtree(os.environ.get(ENV_CONTROL, ""), ignore_errors=True)


class SharedControl:
    """A worker's view of the control directory: announce readiness, publish reloads, apply siblings'."""

    def __init__(self, registry, apply_wait_s: float):
        self.index = worker_index()
        self.count = int(os.environ.get(ENV_COUNT, "1"))
        self.dir = Path(os.environ[ENV_CONTROL])
        self.registry = registry
        self.apply_wait_s = apply_wait_s
        self._applied = 0
        self._lock = threading.Lock()

    def ready(self) -> None:
        (self.dir / f"ready.{self.index}").write_text(str(os.getpid()))

    def _read(self) -> tuple[int, bytes] | None:
        try:
            raw = (self.dir / "config.pb").read_bytes()
        except OSError:
            return None
        gen, _, payload = raw.partition(b"\n")
        return int(gen), payload

    def publish(self, cfg) -> int:
        """After this worker applied `cfg` (a reload, or a changed config file): hand it to the siblings."""
        with self._lock, open(self.dir / "publish.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # generations are numbered across processes
            current = self._read()
            gen = (current[0] if current else 0) + 1
            tmp = self.dir / f"config.pb.{self.index}.tmp"
            tmp.write_bytes(str(gen).encode() + b"\n" + cfg.SerializeToString())
            os.replace(tmp, self.dir / "config.pb")
            self._applied = gen
            self._ack(gen)
            return gen

    def start_on(self, file_config) -> None:
        """Start-up's config apply in a worker: the newest config its siblings applied (a reload, a changed
        file), else the start-up file's. A sibling's labels may name versions this worker has not loaded yet,
        which TF Serving refuses: its versions load first, then its labels apply."""
        from tfsb.server.config import ModelServerConfig

        current = self._read()
        if current is None:
            self.registry.apply(file_config)
            return
        gen, payload = current
        cfg = ModelServerConfig.FromString(payload)
        unlabelled = ModelServerConfig.FromString(payload)
        for m in unlabelled.model_config_list.config:
            m.ClearField("version_labels")
        self.registry.apply(unlabelled)
        for name in self.registry.names():
            self.registry.model(name).wait_loaded()
        self.registry.apply(cfg)
        self._applied = gen
        self.catch_up()

    def catch_up(self) -> None:
        """Before the ports open: apply any config published while this worker was loading the last one."""
        while self._apply_newest():
            pass
        self._ack(self._applied)

    def _apply_newest(self, **apply_kw) -> bool:
        """Apply the newest config a sibling published, if this worker has not yet; True when it did. One that
        cannot be applied yet (a label on a version still loading) is retried by the next call."""
        from tfsb.server.config import ModelServerConfig

        current = self._read()
        if current is None or current[0] <= self._applied:
            return False
        gen, payload = current
        cfg = ModelServerConfig.FromString(payload)
        try:
            if cfg != self.registry.config:
                self.registry.apply(cfg, **apply_kw)
                log.info("worker %d applied config generation %d from a sibling", self.index, gen)
        except ServingError as e:
            log.warning("worker %d: config generation %d not applied yet (%s); retrying", self.index, gen, e)
            return False
        with self._lock:
            self._applied = max(self._applied, gen)
        self._ack(gen)
        return True

    def _ack(self, gen: int) -> None:
        tmp = self.dir / f"ack.{self.index}.tmp"
        tmp.write_text(str(gen))
        os.replace(tmp, self.dir / f"ack.{self.index}")

    def reloaded(self, cfg, seconds_left: float) -> None:
        """The reload API's hook: publish, then wait (within the reload's own wait) for every sibling."""
        gen = self.publish(cfg)
        late = self.wait_for_siblings(gen, seconds_left)
        if late:
            log.warning("config generation %d: workers %s have not applied it yet (they keep retrying)", gen, late)

    def wait_for_siblings(self, gen: int, timeout: float) -> list[int]:
        """Workers (indices) that had not applied generation `gen` when `timeout` ran out."""
        deadline = time.monotonic() + timeout
        while True:
            late = []
            for i in range(self.count):
                try:
                    if int((self.dir / f"ack.{i}").read_text() or 0) < gen:
                        late.append(i)
                except (OSError, ValueError):
                    late.append(i)
            if not late or time.monotonic() > deadline:
                return late
            time.sleep(0.05)

    def watch(self, stop: Lifecycle) -> None:
        while not stop.wait(_POLL_S):
            self._apply_newest(wait_seconds=self.apply_wait_s, reload=True)


def start_watching(control: SharedControl, stop: Lifecycle) -> None:
    threading.Thread(target=control.watch, args=(stop,), name="control-watch", daemon=True).start()
