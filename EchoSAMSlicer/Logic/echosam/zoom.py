"""Prompt zoom: a prompted model sees the heart, not the whole fan.

A MemSAM at 128 px sees a whole apical fan with the left heart in about a third of its width: on the
simulated loops the myocardium is about 5 input pixels thick (median), a cell or two of the decoder's
32 x 32 mask, and even from the true box on every frame the decoder reaches a myocardial Dice of only
0.76 (bench/memsam_ceiling.py). The user's prompt already says where the
heart is, so the model input can be the region around the prompts instead: the prompts' joint box
grown by ``margin`` of its size on every side, widened where needed so that neither side is under
``MIN_ASPECT`` of the other (the crop is stretched to the model's square input), and clipped to the
frame. The structures' motion through the loop must stay inside it: the margin is that allowance.

A model trained on such crops records its margin in its config (``prompt_zoom``); the pipeline then
narrows the ultrasound region (`echosam.fan.FanRegion`) to the zoom box, so that prompts, labels,
``run.json`` and `echosam correct` all go through the one crop mapping. Training draws the same box
from the true masks (`zoom_box`, with a random margin) so the model sees at training what it sees in
use. Labels outside the zoom box are background by construction.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from .errors import EchoSAMError, PromptError

MIN_ASPECT = 0.6       # the zoom box's shorter side is at least this fraction of its longer side
# Per side, before the model's margin, for an LV box without a myocardium prompt: with the bundled MemSAM's
# margin (0.25) one LV box is then cropped as at margin 0.5, which on the val loops gives LV Dice 0.930 and EF MAE
# 3.9 from one LV box, against 0.894 and 7.8 at 0.25 (a crop that hides the walls and the annulus).
CAVITY_CONTEXT = {"lv": 1.0 / 6.0}


def union_box(boxes: Sequence) -> Optional[tuple]:
    """The joint (x0, y0, x1, y1) of boxes (pixel coordinates); None when there is none."""
    boxes = [tuple(float(v) for v in b) for b in boxes if b is not None]
    if not boxes:
        return None
    a = np.array(boxes)
    return (float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 2].max()), float(a[:, 3].max()))


def mask_extent(mask: np.ndarray) -> Optional[tuple]:
    """The tight (x0, y0, x1, y1) pixel box of a mask's non-zero pixels; None when it is empty."""
    yx = np.argwhere(np.asarray(mask) != 0)
    if len(yx) == 0:
        return None
    (y0, x0), (y1, x1) = yx.min(0), yx.max(0)
    return (float(x0), float(y0), float(x1), float(y1))


def zoom_box(box, shape_hw, margin: float, min_aspect: float = MIN_ASPECT) -> tuple:
    """The crop (x0, y0, x1, y1), inclusive integer pixels inside an (H, W) frame, around ``box``:
    grown by ``margin`` of its width/height on each side, then its shorter side widened about the
    centre to at least ``min_aspect`` of the longer one, then clipped to the frame."""
    if not margin >= 0:
        raise EchoSAMError(f"The zoom margin must be a number >= 0, not {margin!r}.")
    h_img, w_img = (int(v) for v in shape_hw)
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 >= x0 and y1 >= y0):
        raise EchoSAMError(f"Zoom box {tuple(box)} has its corners the wrong way round (x0 <= x1, y0 <= y1).")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = (x1 - x0 + 1) * (1 + 2 * margin), (y1 - y0 + 1) * (1 + 2 * margin)
    w, h = max(w, min_aspect * h), max(h, min_aspect * w)
    # clip to the frame; a side pushed off one edge is not moved to the other (the heart stays centred)
    left, right = int(np.floor(cx - w / 2 + 0.5)), int(np.ceil(cx + w / 2 - 0.5))
    top, bottom = int(np.floor(cy - h / 2 + 0.5)), int(np.ceil(cy + h / 2 - 0.5))
    return (max(0, left), max(0, top), min(w_img - 1, right), min(h_img - 1, bottom))


def zoom_region(region, box, margin: float):
    """A `FanRegion` narrowed to the zoom box around ``box`` (full-frame pixels): its fan mask inside
    that box. The region is returned as it is when the zoom box holds its whole crop."""
    from .fan import FanRegion

    x0, y0, x1, y1 = zoom_box(box, region.shape, margin)
    rect = np.zeros(region.shape, bool)
    rect[y0:y1 + 1, x0:x1 + 1] = True
    mask = region.mask & rect
    if not mask.any():
        raise EchoSAMError(f"The prompts' box {tuple(round(v) for v in box)} does not meet the imaging fan "
                           f"{region.bbox}; place the prompt on the fan.")
    if mask.sum() == region.mask.sum():
        return region
    note = f"the model input is zoomed to the prompts: x {x0}..{x1}, y {y0}..{y1} (margin {margin:g})"
    narrowed = FanRegion.from_mask(mask, region.source, notice=region.notice)
    return replace(narrowed, zoom={"box": [x0, y0, x1, y1], "margin": float(margin), "note": note},
                   orientation=region.orientation)


def with_context(key: str, box) -> Optional[tuple]:
    """A structure's box grown by the context its decoder needs that the box itself does not show
    (`CAVITY_CONTEXT`: an LV cavity box by a sixth of its size per side, for its walls and the mitral
    annulus). None stays None."""
    if box is None:
        return None
    grow = CAVITY_CONTEXT.get(key, 0.0)
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = grow * (x1 - x0 + 1), grow * (y1 - y0 + 1)
    return (x0 - dx, y0 - dy, x1 + dx, y1 + dy)


def prompt_extent(box=None, points=None, labels=None, mask=None) -> Optional[tuple]:
    """The box (pixels) of what one structure's prompts say about its extent: a box together with its
    include points (label 1), and a mask's pixels; None when they give none (points alone)."""
    boxes = []
    if box is not None:
        boxes.append(tuple(float(v) for v in box))
        if points is not None and len(points):
            pts = np.asarray(points, dtype=float).reshape(-1, 2)
            if labels is not None:
                pts = pts[np.asarray(labels).reshape(-1) == 1]
            boxes += [(x, y, x, y) for x, y in pts]
    if mask is not None:
        boxes.append(mask_extent(mask))
    return union_box(boxes)


def structure_extents(items) -> dict:
    """{structure key: the union of its prompts' extents (or None)} from ``(key, box, points, labels, mask)`` items,
    one per prompt (`prompt_extent`); the command line and Slicer gather their prompts this way."""
    extents: dict = {}
    for key, box, points, labels, mask in items:
        extents[key] = union_box([extents.get(key), prompt_extent(box, points, labels, mask)])
    return extents


def joint_extent(extents: dict) -> Optional[tuple]:
    """The box the zoom grows: the union of the structures' extents ({key: box or None}), an LV box given its
    walls (`with_context`) unless the myocardium's own extent, which holds them, is among them."""
    has_walls = extents.get("myo") is not None
    return union_box([box if has_walls else with_context(key, box) for key, box in extents.items()])


def zoom_for(region, loaded, extent):
    """(region, notice): ``region`` narrowed around ``extent`` (`joint_extent` of the prompted structures)
    when ``loaded`` is a prompt-zoomed model; the notice says what happened (None for a model without it)."""
    margin = model_margin(loaded)
    if margin is None or not loaded.prompted:
        return region, None
    if extent is None:
        return region, ("the prompts give no extent (points only): the model sees the whole fan; a box "
                        "or a mask lets it zoom to the heart, which is more accurate.")
    zoomed = zoom_region(region, extent, margin)
    return zoomed, (zoomed.zoom or {}).get("note")


def check_inside_zoom(region, mask: np.ndarray, what: str) -> None:
    """A PromptError when a full-frame ``mask`` reaches outside a zoomed ``region`` (a correction there
    would be cut: the model never sees those pixels and no label is written there)."""
    if region.zoom and (np.asarray(mask, bool) & ~region.mask).any():
        x0, y0, x1, y1 = region.bbox
        raise PromptError(f"{what} reaches outside the region this result was zoomed to (x {x0}..{x1}, y {y0}..{y1}); "
                          "segment again with a box that covers the whole structure.")


def model_margin(loaded) -> Optional[float]:
    """The zoom margin a loaded model was trained with (its config's ``prompt_zoom``), None for none."""
    m = getattr(loaded.config, "prompt_zoom", None)
    return None if m is None else float(m)


__all__ = ["MIN_ASPECT", "CAVITY_CONTEXT", "with_context", "joint_extent", "union_box", "mask_extent", "zoom_box",
           "zoom_region", "prompt_extent", "structure_extents", "zoom_for", "check_inside_zoom", "model_margin"]
