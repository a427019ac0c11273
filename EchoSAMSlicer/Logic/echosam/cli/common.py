"""What every subcommand shares: the ``-q``/``--debug`` options and the progress callback.

``-q`` is accepted before or after the subcommand (``echosam -q segment ...`` = ``echosam segment -q
...``). The subcommand's copy defaults to "not given" (``argparse.SUPPRESS``), so it never resets
the global one.
"""
from __future__ import annotations

import argparse
from typing import Callable

from ..progress import no_progress, tqdm_progress


def add_common(parser: argparse.ArgumentParser, top: bool = False) -> None:
    default = False if top else argparse.SUPPRESS
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bars")
    parser.add_argument("--debug", action="store_true", default=default, help="show full tracebacks for errors")


def progress_for(args: argparse.Namespace, desc: str) -> Callable[..., None]:
    """The progress callback a subcommand passes to long work: a tqdm bar, or nothing with -q."""
    if getattr(args, "quiet", False):
        return no_progress
    return tqdm_progress(desc)


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    """The reader options every command that reads a cine accepts (the same names everywhere)."""
    parser.add_argument("--slices-as-frames", action="store_true",
                        help="read a 3D volume's slices as the frames of a cine")
    parser.add_argument("--fps", type=float, default=None, help="frame rate in Hz, overriding the file's timing")


def reading_options(args: argparse.Namespace) -> dict:
    """``--slices-as-frames`` / ``--fps`` as the ``read`` dict of `echosam.pipeline`."""
    return {"slices_as_frames": bool(getattr(args, "slices_as_frames", False)), "fps": getattr(args, "fps", None)}
