"""The one lock on a result folder: a command that reads a result folder and publishes a new one
(`echosam correct`, `segment`/`report`/`demo` over an existing folder) holds it from the first read to
the publish, so two runs on the same folder never both succeed with one's work silently lost.

The lock is an exclusive ``flock`` on the folder itself (no lock file is created, so nothing is left
behind by a crash: the OS drops the lock with the process). A second run does not wait: it refuses at
once with a message naming the folder (exit code 2), and the folder is untouched. After an atomic
publish the path holds a new folder (a new inode); a run that locked the replaced one notices and
takes the lock again on the current folder. On systems without ``fcntl`` (Windows) there is no lock.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..errors import EchoSAMError
from .atomic import follow_link

try:
    import fcntl
except ImportError:                 # pragma: no cover - Windows
    fcntl = None


class FolderBusyError(EchoSAMError):
    """Another EchoSAM command is working on the same result folder."""


def _busy(path: Path) -> FolderBusyError:
    return FolderBusyError(f"{path} is being written by another echosam command (segment, correct or report); "
                           "wait until it has finished, then run this command again.")


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of the result folder ``path`` (nothing to lock while it does not exist);
    raises `FolderBusyError` when another process holds it."""
    path = follow_link(Path(path))
    fd = None
    if fcntl is not None:
        for _ in range(5):
            if not path.is_dir():
                break
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _busy(path) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except OSError:
                same = False
            if same:
                break
            os.close(fd)            # the folder was replaced while we took the lock: lock the new one
            fd = None
        else:
            raise _busy(path)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
