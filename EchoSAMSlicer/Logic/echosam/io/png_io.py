"""A folder of PNG frames: ``frame_0000.png``, ``frame_0001.png``, ... plus ``cine.json``.

Frames are 8-bit (uint8 cines) or 16-bit (uint16 cines) grey PNGs; other types are min-max
scaled to 8 bits. ``cine.json`` holds the exact IJK-to-RAS matrix (mm), the frame times (s),
``spacing_mm`` (row, col) and ``fps``. Reading accepts any folder of PNGs (sorted by the
numbers in their names, so ``f2.png`` comes before ``f10.png``); without ``cine.json`` a
hand-written one may give just ``spacing_mm`` and/or ``fps``; else 1 mm pixels and 30 fps.
Colour PNGs become grey (BT.601).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..cine import Cine, geometry_matrix
from ..errors import CineError
from .limits import check_bytes
from .common import RawCine, geometry_record, parse_geometry_record, to_uint8

SIDECAR = "cine.json"


def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def write_png_folder(cine: Cine, folder: Path) -> None:
    """Write ``cine`` as PNG frames plus ``cine.json`` into ``folder`` (a fresh temporary folder)."""
    from PIL import Image

    frames = cine.frames if cine.frames.dtype in (np.uint8, np.uint16) else to_uint8(cine.frames)
    digits = max(4, len(str(cine.n_frames - 1)))
    for i, frame in enumerate(frames):
        Image.fromarray(np.ascontiguousarray(frame)).save(folder / f"frame_{i:0{digits}d}.png")
    (folder / SIDECAR).write_text(geometry_record(cine, frame_pattern=f"frame_%0{digits}d.png"))


def read_png_folder(folder: Path, slices_as_frames: bool = False) -> RawCine:
    """Read every ``*.png`` in ``folder`` as one frame each, in natural name order."""
    from PIL import Image

    files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".")),
                   key=_natural_key)
    if not files:
        raise CineError(f"The folder {folder} holds no .png frames; give a folder of frame_0000.png, ... files.")
    declared = 0
    for p in files:                     # sizes from the PNG headers before any pixel is decoded
        with Image.open(p) as im:
            declared += im.size[0] * im.size[1] * max(len(im.getbands()), 3)
    check_bytes(declared, folder.name)
    frames = []
    for p in files:
        with Image.open(p) as im:
            if im.mode in ("P", "LA", "PA", "1"):
                im = im.convert("RGBA" if "A" in im.mode else "RGB")
            frames.append(np.asarray(im))
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise CineError(f"The PNG frames in {folder} differ in size ({sorted(shapes)}); all frames must match.")
    arr = np.stack(frames)
    meta = {"format": "png", "spacing_known": False}
    m = times = None
    side = folder / SIDECAR
    if side.exists():
        text = side.read_text()
        m, times, rec = parse_geometry_record(text, arr.shape[0])
        if not rec:
            try:
                rec = json.loads(text)
            except ValueError as exc:
                raise CineError(f"{side} is not valid JSON ({exc}); fix or delete it.") from exc
            if "spacing_mm" in rec:
                m = geometry_matrix(rec["spacing_mm"])
            if rec.get("fps"):
                times = np.arange(arr.shape[0]) / float(rec["fps"])
        meta["spacing_known"] = m is not None
    return RawCine(arr, m, times, meta)
