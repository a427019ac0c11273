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
import re
import signal
import sys
import threading
import warnings
from typing import Optional, Sequence

from .. import __version__
from ..errors import CancelledError, EchoSAMError, is_out_of_memory
from . import batch, files, models, segment
from .common import add_common, progress_for

COMMAND_MODULES = (files, segment, models, batch)
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


#: options whose value may start with "-" (negative coordinates): "--points -5,-3,1" is one option
NEGATIVE_VALUE_OPTIONS = ("--points", "--box")
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every temporary is cleaned up on the way out."""


def join_negative_values(argv: Sequence[str]) -> list:
    """``[..., "--points", "-5,-3,1"]`` -> ``[..., "--points=-5,-3,1"]`` (argparse would take the value for
    an option); the value is then parsed, and reported as outside the image, like any other."""
    out, i = [], 0
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        if tok in NEGATIVE_VALUE_OPTIONS and i + 1 < len(argv) and re.match(r"-[\d.]", argv[i + 1]):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    SIGTERM is handled like Ctrl-C (temporaries removed, nothing half-written), exit code 143; library
    warnings are silenced unless ``--debug`` (a refusal is one line, not a screen of warnings)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    argv = join_negative_values(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # --help, --version, or a usage error already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USER_ERROR
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.simplefilter("ignore")
            return int(args.func(args) or 0)
    except Terminated:
        print("echosam: terminated (SIGTERM); nothing was half-written", file=sys.stderr)
        return EXIT_TERMINATED
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
            return error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}; nothing was written")
        print(f"echosam: internal error: {type(exc).__name__}: {exc}\n"
              "Run the same command with --debug for the full traceback and please report it.", file=sys.stderr)
        return EXIT_INTERNAL


__all__ = ["main", "build_parser", "error", "progress_for", "EXIT_USER_ERROR", "EXIT_INTERRUPTED", "EXIT_INTERNAL",
           "EXIT_TERMINATED", "join_negative_values"]
