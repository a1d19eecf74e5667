"""The in-process test tier: a command-line entry point or a Python snippet run inside the test process,
with its stdout, stderr and exit status captured as `subprocess.run` would report them.

A subprocess costs a fresh interpreter and a TensorFlow import (seconds on a 2-core machine) before the
first line of the command runs; in-process, every call after the first costs only the command itself. What
only a real process can show (the `python -m ...` entry point itself, signals, exit codes of a crashed
interpreter) keeps a subprocess test of its own.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import shlex
import subprocess
import sys
import threading
import traceback
from pathlib import Path

from tests.server_util import Endpoints

REPO = Path(__file__).resolve().parent.parent
_LOCK = threading.Lock()  # sys.stdout/sys.argv are process-wide: one in-process command at a time


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message"): the interpreter prints it and exits 1
    return 1


def run_main(module: str, args: list[str], *, cwd: str | os.PathLike | None = None,
             stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m module *args`, in-process: `module.main(argv)` with captured output. An uncaught exception
    is a traceback on stderr and status 1, as the interpreter would report it."""
    spec = importlib.util.find_spec(module)
    is_package = spec is not None and spec.submodule_search_locations is not None
    main = importlib.import_module(f"{module}.__main__" if is_package else module)
    out, err = io.StringIO(), io.StringIO()
    with _LOCK, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _argv(module, args), \
            _cwd(cwd), _stdin(stdin):
        try:
            rc = _exit_status(main.main(list(args)))
        except SystemExit as e:  # argparse errors and --help
            rc = _exit_status(e.code)
        except BaseException:  # noqa: BLE001 - reported like the interpreter does
            traceback.print_exc()
            rc = 1
    return subprocess.CompletedProcess([sys.executable, "-m", module, *args], rc, out.getvalue(), err.getvalue())


def run_python(code: str, *, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """`python -c code`, in-process (a fresh globals namespace; the modules it imports are shared)."""
    out, err = io.StringIO(), io.StringIO()
    with _LOCK, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _argv("-c", []), _cwd(cwd):
        try:
            exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
            rc = 0
        except SystemExit as e:
            rc = _exit_status(e.code)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            rc = 1
    return subprocess.CompletedProcess([sys.executable, "-c", code], rc, out.getvalue(), err.getvalue())


def run_command(cmd: str, **kw) -> subprocess.CompletedProcess:
    """A README command line: `python -m <module> ...` without shell syntax runs in-process; anything else
    (curl, pipes, redirections, variables) in a shell."""
    words = shlex.split(cmd)
    plain = not any(ch in cmd for ch in "|&;<>$`")
    if plain and len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1] == "-m":
        return run_main(words[2], words[3:], cwd=kw.get("cwd"))
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=300, **kw)


@contextlib.contextmanager
def _argv(module: str, args: list[str]):
    saved = sys.argv
    sys.argv = [module, *args]
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _cwd(cwd):
    if cwd is None:
        yield
        return
    saved = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def _stdin(text: str | None):
    if text is None:
        yield
        return
    saved = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


class InProcessServer(Endpoints):
    """`python -m tfsb.server <args>` inside the test process: the same flags, start-up order, ports, transports
    and shutdown (`serving.server.build_and_start`, `Server.stop`), without an interpreter and a TensorFlow
    import per server. The interface of `tests.server_util.ServerProcess`, less `proc`: a test that signals
    or kills the server, reads its exit status or measures its memory uses a real process.

    Process-wide state is shared with the test process (the Prometheus registry, TensorFlow's op registry):
    tests on metrics compare before/after values, never absolute ones."""

    def __init__(self, args: list[str], *, rest: bool = True, env: dict[str, str] | None = None,
                 credentials=None):
        import logging

        if env:
            raise ValueError("an in-process server shares the test process's environment: use ServerProcess")
        super().__init__(args, rest, credentials)
        self._log = io.StringIO()
        self._handler = logging.StreamHandler(self._log)
        self._handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s] %(message)s"))
        self._handler.setLevel(logging.INFO)
        logger = logging.getLogger("tfsb.server")
        logger.addHandler(self._handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        self.server = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, name="in-process-server", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        from tfsb.server.flags import parse_flags
        from tfsb.server.server import build_and_start

        try:
            self.server = build_and_start(parse_flags(self.args))
        except BaseException as e:  # noqa: BLE001 - reported by wait_ready, like a process's exit
            self.error = e

    def log_text(self) -> str:
        return self._log.getvalue()

    def alive(self) -> bool:
        """Started and not shutting down (a process's `poll() is None`)."""
        return self.server is not None and not self.server.stopping

    def wait_ready(self, timeout: float = 180.0) -> "InProcessServer":
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_text()[-4000:]}")
        if self.error is not None:
            raise RuntimeError(f"server failed to start: {self.error}\n{self.log_text()[-4000:]}") from self.error
        return self

    def stop(self, timeout: float = 30.0) -> int:
        import logging

        self._thread.join(timeout)
        if self.server is not None:
            self.server.stop(min(timeout, float(self.server.options.shutdown_grace_period_seconds)))
        logging.getLogger("tfsb.server").removeHandler(self._handler)
        return 0
