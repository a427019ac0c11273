"""One progress-callback type and one cancel token, shared by the session, the CLI, training and
the Slicer module.

A progress callback is called as ``callback(done, total, message)`` with frame (or step) counts.
A `CancelToken` is checked between frames; long loops call `token.raise_if_cancelled()`.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional, Protocol

from .errors import CancelledError


class ProgressCallback(Protocol):
    def __call__(self, done: int, total: int, message: str = "") -> None: ...


def no_progress(done: int, total: int, message: str = "") -> None:
    """The default callback: report nothing."""


class CancelToken:
    """Thread-safe cancel flag. The GUI thread calls `cancel()`, the worker checks it between frames."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event.clear()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("Cancelled by the user; frames finished before the cancel were kept.")


def tqdm_progress(desc: str, unit: str = "frame", disable: Optional[bool] = None) -> Callable[..., None]:
    """A progress callback that drives a tqdm bar (used by the CLI and training)."""
    from tqdm.auto import tqdm

    bar = None

    def callback(done: int, total: int, message: str = "") -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False)
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return callback
