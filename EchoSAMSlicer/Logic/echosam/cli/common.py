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
