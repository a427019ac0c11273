"""A thin structure's mask grown past the threshold into pixels no structure claims (hysteresis).

The label map is drawn at the session's threshold (0.5): the structure with the highest probability wins,
background where none reaches it (`session.results`). A small model reads a thin ring (the myocardium, a
few input pixels thick) too thin: on the 80 selection loops (`val2`, `val2_dark`, `val3`) its predicted
myocardium missed 20-26 % of the true one, mostly on pixels drawn as background at its outer border. A
model config's ``grow_thresholds`` (``{structure: low}``) lets that structure's mask grow into those
background pixels wherever its own probability passes ``low``, as long as the grown pixels connect to its
mask at the threshold (8-connectivity): hysteresis thresholding, as an edge detector keeps weak edges
that touch strong ones. So growth never takes a pixel another structure won (the LV and LA, hence the
EF, are unchanged), never adds a stray component (`echosam.consistency`'s promise holds) and never
touches a user's locked mask. It acts on the label map only; the model's memory keeps its own masks.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

from .structures import STRUCTURES

_EIGHT = np.ones((3, 3), bool)


def grow_problem(grow, threshold: float) -> Optional[str]:
    """What is wrong with ``grow`` (``{structure: low threshold}``) for a model drawn at ``threshold``; None
    when nothing is."""
    if not isinstance(grow, dict):
        return f"grow_thresholds {grow!r} is not a mapping of structure -> threshold"
    unknown = sorted(set(grow) - set(STRUCTURES))
    if unknown:
        return f"grow_thresholds names {unknown}, which are not structures ({', '.join(STRUCTURES)})"
    bad = {k: v for k, v in grow.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < threshold}
    if bad:
        return f"grow_thresholds {bad} must lie between 0 and the threshold {threshold}"
    return None


def grow_into_free(labels: np.ndarray, label: int, prob: np.ndarray, low: float) -> np.ndarray:
    """``labels`` (H, W) with structure ``label`` grown into its background pixels where ``prob`` >= ``low``
    and connected to its pixels there; the same array, changed in place."""
    seeds = labels == label
    free = (labels == 0) & (prob >= low)
    if not seeds.any() or not free.any():
        return labels
    parts, n = ndimage.label(seeds | free, structure=_EIGHT)
    reached = np.zeros(n + 1, bool)         # a lookup by component: cheaper than np.isin on every frame
    reached[parts[seeds]] = True
    labels[free & reached[parts]] = label
    return labels
