"""In-between frames: memory steps shorter than the cine's frame interval.

Why: a memory model predicts each frame from its memory of the frames before it, so where the heart
moves far between two frames its mask lags behind, most in systole: the volume curve comes out too flat
and the EF low. The bundled MemSAM read EF 11.3 points low on a phantom it never saw at 12 frames a beat
and 5.5 low on the same beats at 30 (docs/evaluation.md). Memory walks the same loop in shorter steps when
``k - 1`` blended frames (linear cross-fades of the two real frames around them) are put between every
two frames: the features are encoded on that timeline, memory reads and writes every step, and only the
real frames (step ``t * k`` is frame ``t``) become results. The blends are not motion, yet they move the
mask a fraction of the way at a time: on those phantoms the EF error fell 9.1 -> 6.6 -> 5.7 -> 5.3 points
for k = 1..4, while the simulator's own selection loops (trained frame rates) stayed level.

A model asks for it in its config (``substep_fps``: the rate memory should step at);
``k = min(MAX_SUBSTEPS, ceil(substep_fps / fps))``. Each step costs about what a frame costs, so k also
multiplies encoding and propagation time; MAX_SUBSTEPS bounds it.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..errors import PromptError

MAX_SUBSTEPS = 4


def substeps_for(fps: float, substep_fps: Optional[float], cap: int = MAX_SUBSTEPS) -> int:
    """Steps per frame interval for a cine at ``fps`` and a model that wants ``substep_fps`` (None: 1)."""
    if not substep_fps or not fps or fps <= 0:
        return 1
    return max(1, min(int(cap), math.ceil(float(substep_fps) / float(fps) - 1e-9)))


def check_substeps(value) -> int:
    """A user's explicit step count, validated (1 = every frame once, as the cine is)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= MAX_SUBSTEPS:
        raise PromptError(f"substeps must be an integer from 1 to {MAX_SUBSTEPS} (or 'auto'), not {value!r}.")
    return int(value)


def n_steps(n_frames: int, k: int) -> int:
    """Feature steps of a loop of ``n_frames`` frames at ``k`` steps per frame interval."""
    return (n_frames - 1) * k + 1 if n_frames else 0


def blended_steps(grey: np.ndarray, k: int, start: int, stop: int) -> np.ndarray:
    """Steps ``start..stop-1`` of the timeline of (T, H, W) grey 0..255 at ``k`` steps per frame interval,
    float32: step ``t * k`` is frame t, the steps between are linear blends of the frames around them,
    rounded to whole grey levels (as an 8-bit frame would hold them). Made on demand, never all at once:
    a long loop's timeline would take k times the cine's memory."""
    if k <= 1:
        return np.asarray(grey[start:stop], dtype=np.float32)
    out = np.empty((stop - start,) + grey.shape[1:], np.float32)
    for i, step in enumerate(range(start, stop)):
        t, j = divmod(step, k)
        if j == 0:
            out[i] = grey[t]
        else:
            w = np.float32(j / k)
            out[i] = np.rint((1 - w) * grey[t].astype(np.float32) + w * grey[t + 1].astype(np.float32))
    return out
