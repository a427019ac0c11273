"""The ``echosam`` command.

Subcommands live in the modules named in `_COMMAND_MODULES`; each exposes
``register(subparsers)`` which adds its parsers and sets ``func(args) -> int`` on them.
A module that does not exist yet is skipped; any other import error propagates.

Exit codes: 0 success, 2 user error (an `EchoSAMError`, printed as one line
``echosam: error: ...`` on stderr, or a bad command line), 130 interrupted (Ctrl-C).
``--debug`` shows the full traceback instead of the one-line message.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, Optional, Sequence

from . import __version__
from .errors import EchoSAMError
from .progress import no_progress, tqdm_progress

_COMMAND_MODULES = ("cli_io", "cli_segment")
EXIT_INTERNAL = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _load_command_modules() -> list:
    modules = []
    for name in _COMMAND_MODULES:
        full = f"{__package__}.{name}"
        try:
            modules.append(importlib.import_module(full))
        except ModuleNotFoundError as exc:
            if exc.name != full:        # the module exists but one of *its* imports is missing
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="echosam",
        description="Segment echocardiography cine loops with SAM-based video models "
                    "(MemSAM, MediViSTA, MA-SAM); convert and inspect cine files.")
    parser.add_argument("--version", action="version", version=f"echosam {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in _load_command_modules():
        module.register(sub)
    return parser


def progress_for(args: argparse.Namespace, desc: str) -> Callable[..., None]:
    """The progress callback a subcommand should pass to long work: a tqdm bar, or nothing with -q."""
    if getattr(args, "quiet", False):
        return no_progress
    return tqdm_progress(desc)


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
    except MemoryError:
        return error("Out of memory. Use a shorter cine, a smaller model, or --device cpu if the GPU is full.")
    except OSError as exc:             # disk full, permission denied, ... while reading or writing
        if args.debug:
            raise
        return error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
    except Exception as exc:           # a bug or an unexpected library failure: say so plainly
        if args.debug:
            raise
        if type(exc).__name__ == "OutOfMemoryError":   # torch.cuda.OutOfMemoryError
            return error("The GPU ran out of memory. Close other GPU programs, use a shorter cine, or --device cpu.")
        print(f"echosam: internal error: {type(exc).__name__}: {exc}\n"
              "Run the same command with --debug for the full traceback and please report it.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":       # pragma: no cover - `python -m echosam.cli`
    sys.exit(main())
