"""Atomic writes and publishing: a writer never leaves a half-written file (or folder) at the destination.

Every writer in `echosam` builds its result under a temporary name in the *same folder* as the
destination (so the final step is a rename on one file system) and publishes it only when complete.
On any error (also Ctrl-C and SIGTERM, which the CLI turns into an exception) the temporary file or
folder is removed and an existing destination is left untouched.

Publishing a folder over an existing one (`atomic_folder`) is one atomic exchange where the OS has
one (Linux ``renameat2(RENAME_EXCHANGE)``); elsewhere it is two renames (old -> ``.NAME.TAG.old``, new
-> NAME), and a crash between them is repaired by the next publish of the same destination
(`recover`): the ``.old`` folder is put back when NAME is missing, removed when NAME is there.

Temporary names are ``.NAME.HOST-PID-RANDOM.tmp`` (NAME shortened with a hash when the full name would
pass the 255-byte limit). `sweep_stale` removes only such names for the same destination whose
process is gone (same host) or that are older than a day, and never one younger than `STALE_AGE_S`.
A destination that is a symbolic link is followed: the link's target is replaced, the link kept.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

from ..errors import CineError

_UMASK = os.umask(0)
os.umask(_UMASK)
NAME_MAX = 255
STALE_AGE_S = 10.0                 # a temporary younger than this is never swept (it may be starting)
ORPHAN_AGE_S = 24 * 3600.0         # older than this it is swept whoever made it
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def short_name(name: str, reserve: int = 64) -> str:
    """``name`` itself, or a shortened form plus a hash of it, so that ``.NAME.<tag>.tmp<suffix>`` fits
    in one file-name component (255 bytes)."""
    if len(name.encode()) + reserve <= NAME_MAX:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    keep = name.encode()[: NAME_MAX - reserve - 12].decode(errors="ignore")
    return f"{keep}~{digest}"


def _tag() -> str:
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def follow_link(path: Path) -> Path:
    """A destination given as a symbolic link means its target (which is what gets replaced)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def nearest_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Fail early (before any long work) when ``path`` cannot be written: its nearest existing folder
    must accept a new entry (probed with a real temporary folder, so read-only file systems and
    permissions are both caught), and an existing ``path`` must be a folder we can replace."""
    path = follow_link(Path(path))
    base = nearest_existing(path.parent)
    if not base.is_dir():
        raise CineError(f"Cannot write the {what} {path}: {base} is a file, not a folder. Choose another location.")
    try:
        probe = tempfile.mkdtemp(prefix=".echosam-probe-", dir=base)
        os.rmdir(probe)
    except OSError as exc:
        raise CineError(f"Cannot write the {what} {path}: {base} is not writable ({exc.strerror or exc}). "
                        "Choose another location.") from None


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:            # exists but not ours (EPERM)
        return True
    return True


def _is_stale(entry: Path, host: str, pid: int, now: float) -> bool:
    """A temporary of ours whose writer is gone: made on this host by a dead process (and not brand
    new), or older than a day."""
    try:
        age = now - entry.lstat().st_mtime
    except OSError:
        return False
    if age < STALE_AGE_S:
        return False
    if age > ORPHAN_AGE_S:
        return True
    return host == _HOST and not _pid_alive(pid)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            entry.unlink()


def recover(path: Path) -> None:
    """Complete or roll back a folder swap that a crash interrupted (two-rename fallback only), and
    sweep this destination's stale temporaries."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return
    ours = re.compile(rf"\.{re.escape(short_name(path.name))}\.([0-9a-f]{{6}})-(\d+)-[0-9a-f]{{8}}\.(old|tmp.*)")
    now = time.time()
    for entry in sorted(parent.iterdir()):
        m = ours.fullmatch(entry.name)
        if m is None or not _is_stale(entry, m.group(1), int(m.group(2)), now):
            continue
        if m.group(3) == "old" and not os.path.lexists(path):
            with contextlib.suppress(OSError):
                os.replace(entry, path)              # the crash came between the renames: roll back
                continue
        _remove(entry)                               # a dead run's temporary, or a finished swap's old copy


sweep_stale = recover


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    ``suffix`` is appended to the temporary name so that libraries choosing their format from
    the file extension (SimpleITK, pyav) see the right one, e.g. ``".nii.gz"``.
    """
    path = follow_link(Path(path))
    if path.is_dir():
        raise CineError(f"{path} is an existing folder; give a file name to write to.")
    _prepare_parent(path)
    recover(path)
    tmp = path.parent / f".{short_name(path.name)}.{_tag()}.tmp{suffix}"
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


def _libc_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _libc_renameat2() if os.name == "posix" else None


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE). False when the OS or the
    file system has no such call (the caller then uses two renames); other errors raise OSError."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def between_renames() -> None:
    """Called between the two renames of the fallback swap (a hook for fault-injection tests)."""


def _swap_in(tmp: Path, path: Path, old: Path) -> None:
    if not path.exists():
        os.replace(tmp, path)
        return
    if exchange(tmp, path):          # path now holds the new folder, tmp the old one
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(path, old)
    between_renames()
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; publish it in place of ``path`` on success.

    An existing destination folder is replaced as a whole (its old content removed) only after
    the new one is complete, by an atomic exchange where available. An existing *file* at ``path``
    is an error.
    """
    path = follow_link(Path(path))
    if path.exists() and not path.is_dir():
        raise CineError(f"{path} exists and is not a folder; give a folder name for the results.")
    _prepare_parent(path)
    recover(path)
    tag, short = _tag(), short_name(path.name)
    tmp = path.parent / f".{short}.{tag}.tmp"
    old = path.parent / f".{short}.{tag}.old"
    tmp.mkdir()
    try:
        yield tmp
        _swap_in(tmp, path, old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        raise
