"""Error types users can read, and the one test for "out of memory".

Every error the engine raises on purpose for a user mistake is an `EchoSAMError`; its message says
what is wrong and what to do. They subclass `ValueError` so Slicer-style logic code (which raises
ValueError on bad input) and the CLI (which turns them into one-line messages and exit code 2) treat
them alike.

`CancelledError` is NOT an `EchoSAMError` (nor a `ValueError`): a cancel is the user's choice, not
a mistake, so every front door gives it its own branch (the worker sends a "cancelled" message, the
CLI exits 130 like Ctrl-C) and an ``except ValueError`` never swallows it.
"""


class EchoSAMError(ValueError):
    """Base class: an input or state problem the user can fix."""


class CineError(EchoSAMError):
    """The cine (image file, array or MRML node) cannot be used: empty, NaN, wrong dimensions..."""


class CheckpointError(EchoSAMError):
    """A weights file is missing, truncated, unsafe, or does not match the architecture."""


class PromptError(EchoSAMError):
    """A prompt (points, box, mask, structure name, frame index) is invalid for this cine."""


class ModelError(EchoSAMError):
    """A model cannot be built or run as asked (unknown name, bad config, out of memory)."""


class ConfigError(EchoSAMError):
    """A configuration (training YAML, ``--set`` override, option value) is invalid."""


class CancelledError(Exception):
    """Work was cancelled by the user between frames; finished frames were kept. Not a user error."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a host `MemoryError`, ``torch.cuda.OutOfMemoryError`` and the "out of memory"
    RuntimeErrors other torch back ends raise (checked by name and text, so torch need not be loaded)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
