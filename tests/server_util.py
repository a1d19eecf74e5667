"""Start `python -m tfsb.server` as a real process on free loopback ports, with real flags.

The integration tests can instead target an already running server (for example the tensorflow/serving
container, see docker/README) through TFS_GRPC=host:port and TFS_REST=http://host:port; tests that must
control the model directory are skipped then."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import grpc

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def external_target() -> tuple[str, str] | None:
    g, r = os.environ.get("TFS_GRPC"), os.environ.get("TFS_REST")
    return (g, r) if g else None


class Endpoints:
    """A server under test on free loopback ports: the flags that put it there, and how to reach it."""

    external = False

    def __init__(self, args: list[str], rest: bool, credentials: grpc.ChannelCredentials | None):
        self.grpc_port = free_port()
        self.rest_port = free_port() if rest else None
        self.credentials = credentials
        self.args = [f"--port={self.grpc_port}", *([f"--rest_api_port={self.rest_port}"] if rest else []), *args]

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"


# what the server prints when a port it was given is taken (ports.check_ports, the REST server's bind)
_PORT_TAKEN = ("Failed to BuildAndStart gRPC server", "Failed to start HTTP Server at")


class ServerProcess(Endpoints):
    """The server as a process on free loopback ports. A free port is only free until someone binds it: when
    the server exits because one of its ports was taken meanwhile, `wait_ready` starts it again on new ones."""

    def __init__(self, args: list[str], *, rest: bool = True, env: dict[str, str] | None = None,
                 credentials: grpc.ChannelCredentials | None = None):
        """`credentials`: how to reach a TLS gRPC port (--ssl_config_file) when waiting for readiness."""
        super().__init__(args, rest, credentials)
        self._given = (args, rest)
        self._env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
        self._start()

    def _start(self) -> None:
        self._log = tempfile.NamedTemporaryFile("w+", prefix="serving-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "tfsb.server", *self.args], cwd=REPO, env=self._env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def _restart_on_new_ports(self) -> bool:
        """After an exit because a port was taken by someone else: new ports, a new process."""
        if self.proc.returncode != 255 or not any(m in self.log_text() for m in _PORT_TAKEN):
            return False
        Endpoints.__init__(self, *self._given, self.credentials)
        self._start()
        return True

    def log_text(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 180.0) -> "ServerProcess":
        """Ready = the gRPC port accepts connections, which TF Serving's ordering makes mean 'loaded'."""
        deadline = time.monotonic() + timeout
        restarts = 3
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if restarts and self._restart_on_new_ports():
                    restarts -= 1
                    continue
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            channel = grpc.insecure_channel(self.grpc_target) if self.credentials is None else \
                grpc.secure_channel(self.grpc_target, self.credentials,
                                    options=[("grpc.ssl_target_name_override", "localhost")])
            with channel as ch:
                try:
                    grpc.channel_ready_future(ch).result(timeout=0.5)
                    return self
                except grpc.FutureTimeoutError:
                    continue
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


class Background:
    """Client threads for the length of a `with` block (the tests' traffic under a rollout, a flip, a drain):
    `spawn` a loop, which runs until `stopping()` says the block ended; the threads are joined on exit."""

    join_s = 60.0

    def __init__(self):
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def spawn(self, fn: Callable, *args) -> None:
        self._threads.append(threading.Thread(target=fn, args=args, daemon=True))

    def stopping(self, pause: float = 0.0) -> bool:
        """True once the block ended (waits up to `pause` seconds first: the loops' pacing)."""
        return self._stop.wait(pause) if pause else self._stop.is_set()

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(self.join_s)
        self.closed()

    def closed(self) -> None:
        """After the threads ended (close channels here)."""


@contextlib.contextmanager
def serving(args: list[str], **kw) -> Iterator[ServerProcess]:
    """A ready server process for the block (`ServerProcess` arguments), stopped after it whatever the
    block raised: the start/wait/yield/stop every process-tier fixture needs."""
    srv = ServerProcess(args, **kw)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def watch_statuses(watch) -> list:
    """Every status a health Watch stream sends until the server ends it."""
    statuses = []
    try:
        for msg in watch:
            statuses.append(msg.status)
    except grpc.RpcError:
        pass
    return statuses


def wait_for(pred, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


def listening(pid: int) -> set[str]:
    """Local addresses of the process's listening TCP sockets, as 'ip:port'."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                hexip, hexport = f[1].split(":")
                raw = bytes.fromhex(hexip)
                if len(raw) == 4:
                    ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
                else:  # four little-endian 32-bit words; gRPC listens v4-mapped (::ffff:127.0.0.1)
                    ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
                    ip = ip.removeprefix("::ffff:")
                out.add(f"{ip}:{int(hexport, 16)}")
    return out


def listening_ports(pid: int) -> set[int]:
    return {int(a.rsplit(":", 1)[1]) for a in listening(pid)}
