"""Error types users can read.

Every error the engine raises on purpose is an `EchoSAMError`; its message says what is wrong and
what to do. They subclass `ValueError` so Slicer-style logic code (which raises ValueError on bad
input) and the CLI (which turns them into one-line messages and exit code 2) treat them alike.
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


class CancelledError(EchoSAMError):
    """Work was cancelled by the user between frames; finished frames were kept."""
