"""``echosam download NAME``: fetch a Models.json model's weights into the user cache (SHA256 checked)."""
from __future__ import annotations

import argparse

from .common import add_common, progress_for


def register(subparsers) -> None:
    p = subparsers.add_parser("download", help="download a Models.json model's weights into the cache",
                              description="Download the weights of a Models.json model into the user cache "
                                          "($ECHOSAM_CACHE or ~/.cache/echosam/models), checking its SHA256.")
    p.add_argument("name", help="model name from Models.json (e.g. sam-vit-b)")
    add_common(p)
    p.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    from ..model_zoo import download, get_entry, is_available, local_path

    entry = get_entry(args.name)
    if is_available(entry):
        print(f"{entry.name}: already available at {local_path(entry)}")
        return 0
    path = download(entry, progress=progress_for(args, entry.name))
    print(f"{entry.name}: downloaded to {path}")
    return 0
