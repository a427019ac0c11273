"""The text forms of prompts, shared by the command line (``--points``, ``--box``) and batch manifests
(``points``, ``box`` columns): points ``"x,y,1;x,y,0"`` and boxes ``"x0,y0,x1,y1"``, in cine pixels
(x = column, y = row; label 1 include, 0 exclude)."""
from __future__ import annotations

import numpy as np

from .errors import PromptError


def parse_points(text: str) -> tuple:
    """``"x,y,1;x,y,0"`` (cine pixels, x = column; label 1 include, 0 exclude, default 1) -> points
    (N, 2) float and labels (N,) int. The one text form of points: CLI options and batch manifests."""
    pts, labs = [], []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split(",")
        if len(parts) not in (2, 3):
            raise PromptError(f"Point {item!r} is not 'x,y' or 'x,y,label' (label 1 include, 0 exclude).")
        try:
            pts.append((float(parts[0]), float(parts[1])))
            labs.append(int(parts[2]) if len(parts) == 3 else 1)
        except ValueError:
            raise PromptError(f"Point {item!r} has a non-numeric value; write points as 'x,y,1;x,y,0'.") from None
    if not pts:
        raise PromptError("--points is empty; write points as 'x,y,1;x,y,0' (cine pixels, x = column).")
    return np.asarray(pts), np.asarray(labs)


def parse_box(text: str) -> tuple:
    """``"x0,y0,x1,y1"`` (cine pixels) -> a 4-tuple of floats. The one text form of a box."""
    try:
        v = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise PromptError(f"--box {text!r} must be four numbers x0,y0,x1,y1 (cine pixels).") from None
    if len(v) != 4:
        raise PromptError(f"--box {text!r} must be four numbers x0,y0,x1,y1 (cine pixels).")
    return v
