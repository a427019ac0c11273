"""In-between frames: a cine made to look as if it had been recorded at a higher frame rate.

``k - 1`` blended frames (linear cross-fades of the two real frames around them) go between every two frames;
on that timeline frame t is step ``t * k``. What a model gets from them depends on what it carries from one
frame to the next (`Session` decides):
- a memory that carries state (a working memory, or a sensory memory) reads and writes every step, so it
  follows the heart in shorter steps; every step is encoded, and only the real frames become results;
- a memory that carries nothing (the bundled MemSAM: no working memory, no sensory memory) can only see the
  blends as each frame's neighbours: a model with ``neighbour_channels`` takes frames t-1, t, t+1 as its input
  channels, and here those neighbours are the blends one step away. Only the frames are encoded and decoded.

Why: the bundled MemSAM tells blood from tissue by what changes between a frame and its neighbours. At
12-20 frames/s the heart moves far between neighbours and the model read the EF 5-11 points low on phantoms it
never saw; with neighbours 1/90 s apart (blended) the error fell to about 5 points, level on its own selection
loops (measured, docs/evaluation.md "In-between frames"; why far neighbours read worse is not known).

A model asks for it in its config (``substep_fps``: the frame rate to look like);
``k = min(cap, ceil(substep_fps / fps))``, the cap MAX_SUBSTEPS (8: down to 11.25 frames/s for 90) for blended
neighbours, which cost about the same at any k, and MAX_WALKED_STEPS (4) where every step is encoded and
decoded, each costing about a frame's time.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..errors import PromptError

MAX_SUBSTEPS = 8          # blended neighbours only: any count costs about the same
MAX_WALKED_STEPS = 4      # a memory that walks every step: each costs about a frame's time


def substeps_for(fps: float, substep_fps: Optional[float], cap: int = MAX_SUBSTEPS) -> int:
    """Steps per frame interval for a cine at ``fps`` and a model that wants ``substep_fps`` (None: 1)."""
    if not substep_fps or not fps or fps <= 0:
        return 1
    return max(1, min(int(cap), math.ceil(float(substep_fps) / float(fps) - 1e-9)))


def check_substeps(value, cap: int = MAX_SUBSTEPS) -> int:
    """A user's explicit step count, validated (1 = the frames alone, as the cine is)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= cap:
        raise PromptError(f"substeps must be an integer from 1 to {cap} (or 'auto'), not {value!r}"
                          + ("; a model whose memory walks every step is held to that for time." if cap < MAX_SUBSTEPS
                             else "."))
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
