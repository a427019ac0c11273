"""The one size guard: every size a file declares is checked before anything that big is allocated.

A small file can declare (or inflate to) a huge array: a 4 MB gzip NRRD of zeros holds 3 GB, a
250-byte run-length mask can claim 50000 x 100000 pixels. Readers call `check_bytes` with what the
header declares *before* reading pixel data, and `check_inflated` streams a compressed payload with a
bounded output (constant memory) to refuse one that holds more than declared. The limit is
`max_bytes()`: ``$ECHOSAM_MAX_BYTES`` (bytes) or 4 GiB.
"""
from __future__ import annotations

import bz2
import os
import zlib

from ..errors import CineError

DEFAULT_MAX_BYTES = 4 << 30
_CHUNK = 1 << 20


def max_bytes() -> int:
    try:
        return max(1, int(os.environ.get("ECHOSAM_MAX_BYTES", DEFAULT_MAX_BYTES)))
    except ValueError:
        return DEFAULT_MAX_BYTES


def human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def check_bytes(n_bytes: int, name: str, what: str = "pixel data") -> None:
    """`CineError` when ``n_bytes`` (declared by ``name``) passes the limit; says what was refused."""
    limit = max_bytes()
    if n_bytes < 0 or n_bytes > limit:
        raise CineError(f"{name} declares {human(n_bytes)} of {what}, more than the {human(limit)} limit; refused "
                        "(a damaged or hostile file?). Set ECHOSAM_MAX_BYTES to allow larger files.")


def check_inflated(fileobj, declared: int, encoding: str, name: str) -> None:
    """Decompress ``fileobj`` (gzip or bzip2) in chunks, keeping nothing, and refuse it as soon as it
    yields more than ``declared`` bytes (a decompression bomb behind a small header)."""
    dec = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "gz") else bz2.BZ2Decompressor()
    out = 0
    while True:
        chunk = fileobj.read(_CHUNK)
        if not chunk:
            return
        while chunk:
            if isinstance(dec, bz2.BZ2Decompressor):
                if dec.eof:
                    return
                out += len(dec.decompress(chunk, max_length=_CHUNK))
                chunk = b""
                while not dec.eof and dec.needs_input is False:
                    out += len(dec.decompress(b"", max_length=_CHUNK))
                    if out > declared:
                        break
            else:
                out += len(dec.decompress(chunk, _CHUNK))
                chunk = dec.unconsumed_tail
                if dec.eof:
                    return
            if out > declared:
                raise CineError(f"{name} inflates to more than the {human(declared)} its header declares; refused "
                                "(a damaged or hostile file). Re-export it.")
