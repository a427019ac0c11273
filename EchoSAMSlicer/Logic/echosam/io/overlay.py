"""Overlay videos: the cine in grey with each structure drawn in its colour from `structures.py`
as a translucent fill plus an opaque one-pixel contour.

The contour of a structure is its mask minus the mask eroded with a 4-connected cross in the
frame plane (no erosion across time), i.e. the mask pixels with a 4-neighbour outside it.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..cine import Cine
from ..structures import BY_LABEL
from .common import to_uint8

FILL_ALPHA = 0.35


def render_overlay(cine: Cine, labels: np.ndarray, alpha: float = FILL_ALPHA) -> np.ndarray:
    """(T, H, W) cine + (T, H, W) labels -> (T, H, W, 3) uint8 RGB frames.

    Inside structure s: ``(1 - alpha) * grey + alpha * 255 * colour``, rounded; on its contour:
    ``255 * colour`` exactly. Label values not in `structures.BY_LABEL` are left undrawn.
    """
    grey = to_uint8(cine.frames).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    lab = np.asarray(labels)
    cross = np.zeros((3, 3, 3), bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)
    for value, s in BY_LABEL.items():
        mask = lab == value
        if not mask.any():
            continue
        colour = 255.0 * np.asarray(s.color, dtype=np.float32)
        rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * colour
        edge = mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)
        rgb[edge] = colour
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
