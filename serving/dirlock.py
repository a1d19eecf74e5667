"""Whether the owner of a working directory (a publisher's hidden staging directory, a supervisor's control
directory) is still alive, decided by an `flock` its owner holds on a file inside it.

A PID says nothing across PID namespaces: two containers publishing into one volume both run as PID 1, so
a PID check deletes a live publisher's directory or keeps a dead one's forever. The kernel drops an
`flock` when its holder dies, however it dies (`kill -9` included), and the lock is the same lock for
every process that opens the file on that filesystem, whatever namespace it runs in."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

LOCK_FILE = ".owner.lock"


class OwnedDir:
    """A new directory under `parent`, owned by this process until `release()` (or until it dies)."""

    def __init__(self, parent: str | os.PathLike, prefix: str):
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self._fd: int | None = os.open(self.path / LOCK_FILE, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def remove(self) -> None:
        """Delete the directory, then drop the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def remove_if_abandoned(directory: Path, *, unlocked_grace_s: float = 60.0) -> bool:
    """Delete `directory` when no live process owns it; True if it was deleted.

    A directory without a lock file is being created this very moment (the lock follows `mkdtemp` at once)
    or was left by an older tool: it is left alone until `unlocked_grace_s` old."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            age = time.time() - directory.stat().st_mtime
        except OSError:
            return False
        if age < unlocked_grace_s:
            return False
        shutil.rmtree(directory, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its owner is alive, in this PID namespace or another
        shutil.rmtree(directory, ignore_errors=True)
        return True
    finally:
        os.close(fd)
