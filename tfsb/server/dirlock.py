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
from pathlib import Path

LOCK_FILE = ".owner.lock"
_MAKING = ".making-"  # the name a directory has until its lock is taken


class OwnedDir:
    """A new directory `<parent>/<prefix>XXXXXXXX`, owned by this process until `remove()` (or until it dies).

    It is made under another name, locked, and only then renamed to its own: a directory named `<prefix>*`
    without a lock file is never one being created, so a cleaner may remove it at once."""

    def __init__(self, parent: str | os.PathLike, prefix: str):
        young = Path(tempfile.mkdtemp(prefix=_MAKING, dir=parent))
        self._fd: int | None = os.open(young / LOCK_FILE, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = Path(parent) / (prefix + young.name[len(_MAKING):])
        os.rename(young, self.path)

    def remove(self) -> None:
        """Delete the directory, then drop the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def remove_if_abandoned(directory: Path) -> bool:
    """Delete `directory` when no live process owns it; True if it was deleted. A directory without a lock
    file was left by a tool that took no lock (an older version of this one): nobody owns it."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
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
