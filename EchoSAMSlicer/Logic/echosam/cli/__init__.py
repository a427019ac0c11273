"""The ``echosam`` command (console script ``echosam = echosam.cli:main``; also ``python -m echosam.cli``).

One module per subcommand group, imported plainly: `files` (info, convert, phantom), `segment`
(segment, report, correct, demo; the work itself is `echosam.pipeline`) and `batch` (many cines;
the work is `echosam.batch`). Each exposes
``register(subparsers)``, which adds its parsers and sets ``func(args) -> int`` on them.

Exit codes: 0 success, 2 user error (an `EchoSAMError`, printed as one line
``echosam: error: ...`` on stderr, or a bad command line), 130 interrupted (Ctrl-C) or cancelled.
``--debug`` shows the full traceback instead of the one-line message.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .. import __version__
from ..errors import CancelledError, EchoSAMError, is_out_of_memory
from . import batch, files, segment
from .common import add_common, progress_for

COMMAND_MODULES = (files, segment, batch)
EXIT_INTERNAL = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="echosam",
        description="Segment echocardiography cine loops with SAM-based video models "
                    "(MemSAM, MediViSTA, MA-SAM, SAM); convert and inspect cine files.")
    parser.add_argument("--version", action="version", version=f"echosam {__version__}")
    add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def error(message: str) -> int:
    """Print ``echosam: error: message`` (one line) on stderr; returns the user-error exit code."""
    print(f"echosam: error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # --help, --version, or a usage error already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USER_ERROR
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except CancelledError as exc:      # the user's choice, not a mistake
        print(f"echosam: cancelled: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EchoSAMError as exc:
        if args.debug:
            raise
        return error(str(exc))
    except KeyboardInterrupt:
        print("echosam: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:            # `echosam ... | head`: the reader left; not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as exc:           # a bug or an unexpected library failure: say so plainly
        if args.debug:
            raise
        if is_out_of_memory(exc):
            return error("Out of memory. Use a shorter cine or a smaller model; on a full GPU close other GPU "
                         "programs or use --device cpu.")
        if isinstance(exc, OSError):   # disk full, permission denied, ... while reading or writing
            return error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        print(f"echosam: internal error: {type(exc).__name__}: {exc}\n"
              "Run the same command with --debug for the full traceback and please report it.", file=sys.stderr)
        return EXIT_INTERNAL


__all__ = ["main", "build_parser", "error", "progress_for", "EXIT_USER_ERROR", "EXIT_INTERRUPTED", "EXIT_INTERNAL"]
