"""The one label-map validator: is an array a label map, and does it lie on a cine's grid?

A label map holds only 0 (background) and the label values of `structures.STRUCTURES` (1 LV cavity,
2 myocardium, 3 LA; a binary 0/1 mask counts as one structure). A grey image (a cine given where a
label map belongs, ``--mask cine.seq.nrrd`` or ``echosam report cine.seq.nrrd``) has many values or
says it is a scalar (not label-map) volume, and is refused: measuring it would give nonsense numbers.

A label map used with a cine must lie on that cine's grid: the same (H, W), the same IJK-to-RAS
geometry (spacing, origin, directions) when the file carries one, and the same number of frames (a
one-frame file is accepted where a single frame is asked for, e.g. a corrected mask). Nothing is
resampled: a mask made on another grid is refused with a message, never silently misplaced.
"""
from __future__ import annotations

import numpy as np

from ..errors import CineError
from ..structures import BY_LABEL

LABEL_VALUES = frozenset({0, *BY_LABEL})
GREY_NODE_CLASSES = {"vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"}


def _values_text() -> str:
    return "0 (background), " + ", ".join(f"{v} {s.name}" for v, s in sorted(BY_LABEL.items()))


def check_label_values(lab: np.ndarray, name: str, node_class: str = "") -> np.ndarray:
    """``lab`` as uint8 when it is a label map; `CineError` naming ``name`` when it is an image."""
    lab = np.asarray(lab)
    if lab.dtype == bool:
        return lab.astype(np.uint8)
    if lab.dtype == object or not (np.issubdtype(lab.dtype, np.integer) or np.issubdtype(lab.dtype, np.floating)):
        raise CineError(f"{name} holds {lab.dtype} values, not a label map; give a label file "
                        f"(values {_values_text()}).")
    if np.issubdtype(lab.dtype, np.floating) and not (np.isfinite(lab).all() and np.array_equal(lab, np.round(lab))):
        raise CineError(f"{name} holds non-integer values; it is an image, not a label map.")
    values = np.unique(lab)
    extra = [v for v in values.tolist() if int(v) not in LABEL_VALUES]
    if extra:
        raise CineError(f"{name} is not a label map: it holds {len(values)} distinct values "
                        f"({values.min():g}..{values.max():g}) where a label map holds only {_values_text()}. "
                        "Is it the cine? Give the label file.")
    if node_class in GREY_NODE_CLASSES:
        raise CineError(f"{name} is a grey image ({node_class}), not a label map; give the label file.")
    return lab.astype(np.uint8)


def check_same_grid(lab_cine, cine, name: str, single_frame_ok: bool = False) -> None:
    """`CineError` unless the label map ``lab_cine`` (a `Cine` from `read_labels`) lies on ``cine``'s grid."""
    t, h, w = lab_cine.frames.shape
    if (h, w) != tuple(cine.shape[1:]):
        raise CineError(f"{name} is {h}x{w} pixels but the cine is {cine.shape[1]}x{cine.shape[2]}; a label map "
                        "must be on the cine's grid (resample it onto the cine first).")
    if t != cine.n_frames and not (single_frame_ok and t == 1):
        raise CineError(f"{name} has {t} frame(s) but the cine has {cine.n_frames}; give the label map made on "
                        "this cine" + (" (or a single frame)." if single_frame_ok else "."))
    a, b = np.asarray(lab_cine.ijk_to_ras, float), np.asarray(cine.ijk_to_ras, float)
    if not np.allclose(a, b, rtol=1e-5, atol=1e-4 * max(1.0, float(np.abs(b[:3, :3]).max()))):
        sa, sb = lab_cine.spacing, cine.spacing
        raise CineError(f"{name} is on another grid than the cine (spacing {sa[0]:g}x{sa[1]:g} mm vs "
                        f"{sb[0]:g}x{sb[1]:g} mm, origin {np.round(a[:3, 3], 3).tolist()} vs "
                        f"{np.round(b[:3, 3], 3).tolist()}); resample it onto the cine first.")
