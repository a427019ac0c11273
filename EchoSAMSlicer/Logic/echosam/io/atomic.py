"""Atomic writes: a writer never leaves a half-written file (or folder) at the destination.

Every writer in `echosam.io` writes to a temporary path in the *same folder* as the
destination (so the final `os.replace` is a rename on one file system) and renames it only
when the write finished. On any error the temporary file/folder is removed and the error
propagates; an existing destination is left untouched.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from ..errors import CineError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _prepare_parent(path: Path) -> None:
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CineError(f"Cannot create the output folder {parent}: {exc.strerror or exc}. "
                            "Choose a writable location.") from exc
    if not os.access(parent, os.W_OK):
        raise CineError(f"The output folder {parent} is not writable. Choose another location.")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    ``suffix`` is appended to the temporary name so that libraries choosing their format from
    the file extension (SimpleITK, pyav) see the right one, e.g. ``".nii.gz"``.
    """
    path = Path(path)
    if path.is_dir():
        raise CineError(f"{path} is an existing folder; give a file name to write to.")
    _prepare_parent(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}"
    try:
        yield tmp
        if not tmp.exists():
            raise CineError(f"Writing {path} produced no file.")
        os.chmod(tmp, 0o666 & ~_UMASK)  # some writers create 0600 temp files; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; swap it in place of ``path`` on success.

    An existing destination folder is replaced as a whole (its old content removed) only after
    the new one is complete. An existing *file* at ``path`` is an error.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CineError(f"{path} exists and is not a folder; give a folder name for PNG frames.")
    _prepare_parent(path)
    tag = uuid.uuid4().hex[:8]
    tmp = path.parent / f".{path.name}.{tag}.tmp"
    old = path.parent / f".{path.name}.{tag}.old"
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
