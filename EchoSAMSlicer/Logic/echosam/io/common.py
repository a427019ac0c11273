"""Pieces shared by the format modules: the raw result a reader returns, RAS/LPS conversion,
intensity conversion to 8 bits, and the small JSON geometry record that formats without
native geometry (video containers, PNG folders) carry along.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..cine import Cine, grey_0_255, seconds_per_unit
from ..errors import CineError

#: RAS <-> LPS: negate the first two world coordinates (the same matrix both ways).
RAS_LPS = np.diag([-1.0, -1.0, 1.0])
GEOMETRY_TAG = "echosam-geometry"


@dataclass
class RawCine:
    """What a format reader returns before it becomes a `Cine`.

    ``frames``: (T, H, W) grey or (T, H, W, 3|4) colour; ``ijk_to_ras`` 4x4 mm (None: unknown,
    identity with 1 mm pixels); ``frame_times`` (T,) s (None: the file has no timing).
    """

    frames: np.ndarray
    ijk_to_ras: Optional[np.ndarray] = None
    frame_times: Optional[np.ndarray] = None
    metadata: dict = field(default_factory=dict)


def lps_matrix(ijk_to_ras: np.ndarray) -> np.ndarray:
    """IJK-to-RAS (4x4) -> IJK-to-LPS (4x4), as NRRD/DICOM/ITK store it."""
    m = np.array(ijk_to_ras, dtype=float)
    m[:3] = RAS_LPS @ m[:3]
    return m


def ras_matrix(ijk_to_lps: np.ndarray) -> np.ndarray:
    """IJK-to-LPS (4x4) -> IJK-to-RAS (4x4)."""
    return lps_matrix(ijk_to_lps)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames as uint8 for 8-bit containers (video, GIF, 8-bit DICOM).

    uint8 stays as is; any other type is min-max scaled over the whole cine to 0..255 (rounded),
    the same convention the models use for non-uint8 cines.
    """
    a = np.asarray(frames)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.rint(grey_0_255(a, np.float64)), 0, 255).astype(np.uint8)


def geometry_record(cine: Cine, **extra) -> str:
    """JSON text with the exact geometry and frame times of ``cine`` (floats as repr, lossless)."""
    rec = {"format": GEOMETRY_TAG, "version": 1, "name": cine.name,
           "ijk_to_ras": [[float(v) for v in row] for row in cine.ijk_to_ras],
           "frame_times": [float(t) for t in cine.frame_times],
           "spacing_mm": list(cine.spacing), "fps": cine.fps}
    rec.update(extra)
    return json.dumps(rec)


def parse_geometry_record(text: str | None, n_frames: int) -> tuple[Optional[np.ndarray], Optional[np.ndarray], dict]:
    """Inverse of `geometry_record`; returns (ijk_to_ras, frame_times, record) or Nones when the text
    is absent, not ours, or does not match ``n_frames``."""
    if not text:
        return None, None, {}
    try:
        rec = json.loads(text)
    except (ValueError, TypeError):
        return None, None, {}
    if not isinstance(rec, dict) or rec.get("format") != GEOMETRY_TAG:
        return None, None, {}
    m = np.asarray(rec.get("ijk_to_ras", np.eye(4)), dtype=float)
    times = rec.get("frame_times")
    t = np.asarray(times, dtype=float) if times is not None and len(times) == n_frames else None
    return (m if m.shape == (4, 4) else None), t, rec


def seconds(values: np.ndarray, unit: str) -> np.ndarray:
    """Time values in ``unit`` (s, ms, us; empty means s) -> seconds."""
    scale = seconds_per_unit(unit)
    if scale is None:
        raise CineError(f"Unknown time unit {unit!r} on the frame axis; expected s or ms.")
    return np.asarray(values, dtype=float) * scale


def check_labels(labels: np.ndarray, cine: Cine) -> np.ndarray:
    """Validate a (T, H, W) label map against ``cine``; returns it as uint8."""
    lab = np.asarray(labels)
    if lab.shape != cine.frames.shape:
        raise CineError(f"Labels of shape {lab.shape} do not match the cine {cine.frames.shape}; "
                        "labels must be (T, H, W) on the cine's grid.")
    if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        raise CineError(f"Labels must be integers (0 background, 1 LV, 2 myocardium, 3 LA), got {lab.dtype}.")
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise CineError(f"Label values must be in 0..255, got {lab.min()}..{lab.max()}.")
    return lab.astype(np.uint8, copy=False)
