"""Segmentation quality: Dice, IoU, HD95, ASSD (mm) per frame and structure, and temporal consistency.

Overlap: ``Dice = 2 |P & T| / (|P| + |T|)``, ``IoU = |P & T| / |P | T|``.

Surface distances follow MedPy/CAMUS practice: the surface of a 2D mask is its pixels with a
4-neighbour outside the mask (mask minus its erosion by a cross; pixels on the image border
count as surface). Distances are Euclidean in mm from pixel centres, computed with
``scipy.ndimage.distance_transform_edt(..., sampling=(row_mm, col_mm))``. ``HD95`` is the 95th
percentile of the pooled distances of P's surface to T's and of T's surface to P's; ``ASSD`` is
the mean of the two mean directed distances.

Empty masks: both empty -> Dice 1, IoU 1, HD95 0, ASSD 0 (a correct "absent"). One empty ->
Dice 0, IoU 0, HD95 and ASSD NaN (a distance to nothing is undefined); means over frames skip
NaN and report how many frames had one empty mask in ``n_one_empty``.

Temporal consistency (after Painchaud et al., "Echocardiography segmentation with enforced
temporal consistency", IEEE TMI 2022, who flag frames whose attribute curves have outlying
second derivatives), computed on the structure's area curve A(t) in mm^2:
- ``mean_abs_rate_mm2_s``: mean |A(t+1) - A(t)| * fps, the average speed of area change;
- ``rate_ratio``: that value for the prediction divided by the truth's (1 = as smooth as the
  truth, > 1 jittery; NaN if the truth's area never changes);
- ``inconsistent_fraction``: with the curve normalised by its mean, a(t) = A(t) / mean(A) (all
  zeros for an absent structure), the fraction of interior frames t (1..T-2) where
  ``|a(t-1) - 2 a(t) + a(t+1)| > threshold``. Default 0.1: an LV area curve of a smooth beat
  sampled with 25 frames per beat peaks near 0.03, while a one-frame jump of 5 % of the mean area
  gives 0.1. Normalising by the mean rather than the min-max range (Painchaud et al. normalise
  attributes over a dataset) keeps a nearly constant curve, e.g. the myocardial area, from turning
  its pixel noise into large second differences. Frame rate, heart rate and mask size all
  change what a consistent curve looks like, so with a truth curve we also report
  ``truth_inconsistent_fraction`` and ``inconsistent_fraction_vs_truth``: the fraction of frames
  whose |d2| exceeds max(threshold, the truth's largest |d2|), a threshold taken from the
  reference as Painchaud et al. take theirs from ground truth.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np
from scipy import ndimage

from .errors import EchoSAMError
from .structures import Structure, parse_structures

SECOND_DIFF_THRESHOLD = 0.1
_CROSS = ndimage.generate_binary_structure(2, 1)


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise EchoSAMError(f"Prediction {p.shape} and truth {t.shape} masks differ in shape; "
                           "resample the prediction onto the truth's grid.")
    return p, t


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks of any shape (both empty -> 1.0)."""
    p, t = _pair(pred, truth)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two boolean masks (both empty -> 1.0)."""
    p, t = _pair(pred, truth)
    union = int((p | t).sum())
    return 1.0 if union == 0 else int((p & t).sum()) / union


def surface(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool surface: mask pixels with a 4-neighbour outside the mask or the image."""
    m = np.asarray(mask, dtype=bool)
    return m & ~ndimage.binary_erosion(m, structure=_CROSS, border_value=0)


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm for (H, W) masks: (pred surface -> truth, truth surface -> pred).
    Both masks must be non-empty."""
    p, t = _pair(pred, truth)
    sp, st = surface(p), surface(t)
    spacing = (float(spacing[0]), float(spacing[1]))
    d_to_t = ndimage.distance_transform_edt(~st, sampling=spacing)
    d_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return d_to_t[sp], d_to_p[st]


def hd95_assd(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """(HD95, ASSD) in mm for (H, W) masks, with the empty-mask convention of the module docstring."""
    p, t = _pair(pred, truth)
    if p.ndim != 2:
        raise EchoSAMError(f"Surface distances take one (H, W) frame, got shape {p.shape}.")
    ep, et = not p.any(), not t.any()
    if ep and et:
        return 0.0, 0.0
    if ep or et:
        return math.nan, math.nan
    a, b = surface_distances(p, t, spacing)
    return float(np.percentile(np.concatenate([a, b]), 95)), float((a.mean() + b.mean()) / 2.0)


def frame_metrics(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict:
    """Per-frame metrics for (T, H, W) boolean masks: dict of (T,) arrays dice, iou, hd95, assd."""
    p, t = _pair(pred, truth)
    if p.ndim == 2:
        p, t = p[None], t[None]
    out = {k: np.empty(p.shape[0]) for k in ("dice", "iou", "hd95", "assd")}
    for i in range(p.shape[0]):
        out["dice"][i], out["iou"][i] = dice(p[i], t[i]), iou(p[i], t[i])
        out["hd95"][i], out["assd"][i] = hd95_assd(p[i], t[i], spacing)
    return out


def area_curve(mask: np.ndarray, pixel_area_mm2: float) -> np.ndarray:
    """(T, H, W) mask -> (T,) area in mm^2."""
    m = np.asarray(mask, dtype=bool)
    return m.reshape(m.shape[0], -1).sum(axis=1) * float(pixel_area_mm2)


def second_differences(curve: np.ndarray) -> np.ndarray:
    """(T-2,) |a(t-1) - 2 a(t) + a(t+1)| of the mean-normalised curve a = A / mean(A)."""
    a = np.asarray(curve, dtype=float)
    if a.size < 3:
        return np.zeros(0)
    mean = a.mean()
    norm = a / mean if mean > 0 else np.zeros_like(a)
    return np.abs(norm[:-2] - 2.0 * norm[1:-1] + norm[2:])


def inconsistent_frames(curve: np.ndarray, threshold: float = SECOND_DIFF_THRESHOLD) -> np.ndarray:
    """Indices of interior frames whose normalised second difference exceeds ``threshold``."""
    return np.flatnonzero(second_differences(curve) > threshold) + 1


def temporal_consistency(pred_area: np.ndarray, truth_area: Optional[np.ndarray] = None, fps: float = 1.0,
                         threshold: float = SECOND_DIFF_THRESHOLD) -> dict:
    """Temporal-consistency numbers of an area curve (T,) in mm^2 (see the module docstring)."""
    a = np.asarray(pred_area, dtype=float)
    rate = float(np.mean(np.abs(np.diff(a))) * fps) if a.size > 1 else 0.0
    bad = inconsistent_frames(a, threshold)
    out = {"mean_abs_rate_mm2_s": rate, "inconsistent_frames": bad.tolist(),
           "inconsistent_fraction": float(bad.size / (a.size - 2)) if a.size > 2 else 0.0}
    if truth_area is not None:
        t = np.asarray(truth_area, dtype=float)
        t_rate = float(np.mean(np.abs(np.diff(t))) * fps) if t.size > 1 else 0.0
        out["truth_mean_abs_rate_mm2_s"] = t_rate
        out["rate_ratio"] = rate / t_rate if t_rate > 0 else math.nan
        t_d2 = second_differences(t)
        out["truth_inconsistent_fraction"] = float(np.mean(t_d2 > threshold)) if t_d2.size else 0.0
        limit = max(threshold, float(t_d2.max()) if t_d2.size else 0.0)
        p_d2 = second_differences(a)
        out["inconsistent_fraction_vs_truth"] = float(np.mean(p_d2 > limit + 1e-12)) if p_d2.size else 0.0
    return out


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def evaluate(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
             structures: Iterable | str | None = ("lv", "myo", "la"), fps: float = 30.0,
             threshold: float = SECOND_DIFF_THRESHOLD) -> dict:
    """Compare (T, H, W) label maps per structure and frame.

    ``spacing`` is (row, col) in mm; ``structures`` keys/labels (default lv, myo, la); ``fps`` for
    the area rates. Returns ``{"structures": {key: {"per_frame": {dice, iou, hd95, assd: lists},
    "mean": {...}, "n_one_empty": int, "temporal": {...}}}, "rows": [per frame and structure]}``;
    ``rows`` are flat dicts (frame, structure, dice, iou, hd95_mm, assd_mm) ready for a CSV.
    """
    p, t = np.asarray(pred), np.asarray(truth)
    if p.shape != t.shape or p.ndim != 3:
        raise EchoSAMError(f"Prediction {p.shape} and truth {t.shape} must both be (T, H, W) label maps.")
    structs: list[Structure] = parse_structures(list(structures) if not isinstance(structures, str) else structures)
    pixel_area = float(spacing[0]) * float(spacing[1])
    result = {"structures": {}, "rows": [], "spacing_mm": [float(spacing[0]), float(spacing[1])],
              "frames": int(p.shape[0])}
    for s in structs:
        pm, tm = p == s.label, t == s.label
        fm = frame_metrics(pm, tm, spacing)
        one_empty = int(np.sum(pm.reshape(len(pm), -1).any(1) != tm.reshape(len(tm), -1).any(1)))
        result["structures"][s.key] = {
            "label": s.label, "name": s.name,
            "per_frame": {k: v.tolist() for k, v in fm.items()},
            "mean": {k: _nanmean(v) for k, v in fm.items()},
            "n_one_empty": one_empty,
            "temporal": temporal_consistency(area_curve(pm, pixel_area), area_curve(tm, pixel_area), fps, threshold),
        }
        for i in range(p.shape[0]):
            result["rows"].append({"frame": i, "structure": s.key, "dice": float(fm["dice"][i]),
                                   "iou": float(fm["iou"][i]), "hd95_mm": float(fm["hd95"][i]),
                                   "assd_mm": float(fm["assd"][i])})
    return result


def format_table(result: dict) -> str:
    """A plain-text table of the per-structure means of an `evaluate` result."""
    lines = [f"{'structure':<10} {'Dice':>7} {'IoU':>7} {'HD95 mm':>8} {'ASSD mm':>8} {'incons.':>8}"]
    for key, r in result["structures"].items():
        m = r["mean"]
        lines.append(f"{key:<10} {m['dice']:7.4f} {m['iou']:7.4f} {m['hd95']:8.3f} {m['assd']:8.3f} "
                     f"{r['temporal']['inconsistent_fraction']:8.3f}")
    return "\n".join(lines)
