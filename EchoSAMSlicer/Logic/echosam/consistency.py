"""Prompt-consistent output: a structure stays one region where it was prompted.

A video model sometimes adds a second, stray blob of a structure far from where the user prompted it
(a bright wall elsewhere, the other ventricle); once in memory such a blob propagates. The rule
below drops those blobs, per frame and structure (`keep_connected`):

1. label the structure's connected components (8-connectivity, ``scipy.ndimage.label``);
2. keep each component that overlaps the *reference* dilated by ``margin`` pixels. The reference is
   the previous frame's kept mask in propagation order (forward or backward from the key frame) and,
   on a prompted frame, the prompt itself: its positive points, its box and its mask;
3. if no component qualifies (or there is no reference), keep the largest one.
   Prompt-free models (no prompt to anchor to) keep the largest component *and* every component
   overlapping the previous frame's kept mask (``keep_largest=True``);
4. fill holes of the cavities (LV, LA: `CAVITIES`), never of the myocardium (a horseshoe: once the
   model closes its base, filling it would swallow the LV cavity).

MemSAM applies it inside propagation, on the decoder's logits at model resolution, before the frame
enters memory (so a dropped blob never propagates): dropped pixels get ``-MASK_LOGIT``, filled holes
``+MASK_LOGIT`` (`PromptedRule`). Prompt-free models apply it to the label map (`keep_connected_labels`).
Locked (user-corrected) frames are never touched: their mask is the output, bit for bit. The rule is
on by default and switched off with ``Session(keep_connected=False)`` / ``echosam segment
--no-keep-connected``.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np

from .structures import get_structure

CAVITIES = ("lv", "la")     # structures whose holes are filled
MASK_LOGIT = 10.0           # the logit a kept/dropped pixel is set to (as a user mask enters memory)
MARGIN_FRACTION = 0.02      # reference dilation: 2 % of the image side ...
MIN_MARGIN = 2              # ... and at least 2 pixels

_EIGHT = np.ones((3, 3), bool)


def margin_for(side: int) -> int:
    """Dilation of the reference, in pixels, for an image of ``side`` pixels."""
    return max(MIN_MARGIN, int(round(MARGIN_FRACTION * side)))


def keep_connected(mask: np.ndarray, reference: Optional[np.ndarray] = None, margin: int = MIN_MARGIN,
                   keep_largest: bool = False, fill_holes: bool = False) -> np.ndarray:
    """(H, W) bool -> the components to keep by the module's rule (bool, same shape).

    ``reference`` (H, W) bool (previous frame's kept mask | prompt raster) or None; ``margin`` pixels;
    ``keep_largest``: always keep the largest component too (prompt-free rule)."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    lab, n = ndimage.label(m, structure=_EIGHT)
    if n > 1:
        keep = np.zeros(n + 1, bool)
        if reference is not None and reference.any():
            near = ndimage.binary_dilation(reference, structure=_EIGHT, iterations=max(0, int(margin))) \
                if margin > 0 else reference
            keep[np.unique(lab[near & m])] = True
            keep[0] = False
        if keep_largest or not keep.any():
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            sizes[0] = 0
            keep[int(np.argmax(sizes))] = True
        m = keep[lab]
    if fill_holes and m.any():
        m = ndimage.binary_fill_holes(m)
    return m


def keep_connected_labels(labels: np.ndarray, structures: Iterable[str], enabled: bool = True,
                          margin: Optional[int] = None) -> np.ndarray:
    """The prompt-free rule on a (T, H, W) label map, frame by frame in time order: per structure keep
    the largest component plus components overlapping the previous frame's kept mask; cavity holes are
    filled where they are background. Dropped pixels become background. Returns a new array."""
    out = np.array(labels, copy=True)
    if not enabled:
        return out
    T, H, W = out.shape
    margin = margin_for(min(H, W)) if margin is None else margin
    for key in structures:
        s = get_structure(key)
        prev = None
        for t in range(T):
            m = out[t] == s.label
            kept = keep_connected(m, prev, margin, keep_largest=True, fill_holes=s.key in CAVITIES)
            out[t][m & ~kept] = 0
            out[t][kept & ~m & (out[t] == 0)] = s.label
            prev = kept if kept.any() else prev
    return out


class PromptedRule:
    """The rule for MemSAM propagation, on (1, 1, S, S) logits (see the module docstring).

    ``threshold`` on sigmoid probabilities (the session's); ``to_model_xy(x, y)`` maps cine pixels to
    model pixels; ``enabled=False`` returns the logits unchanged."""

    def __init__(self, img_size: int, threshold: float = 0.5, to_model_xy=None, enabled: bool = True) -> None:
        self.img_size, self.enabled = int(img_size), bool(enabled)
        self.logit_cut = math.log(threshold / (1.0 - threshold))
        self.to_model_xy = to_model_xy or (lambda x, y: (x, y))
        self.margin = margin_for(self.img_size)

    def prompt_raster(self, prompt) -> Optional[np.ndarray]:
        """A store entry's positive points, box and mask as an (S, S) bool raster (None if empty)."""
        S = self.img_size
        r = np.zeros((S, S), bool)
        for (x, y), lab in zip(getattr(prompt, "points", None) or [], getattr(prompt, "labels", None) or []):
            if int(lab) == 1:
                mx, my = self.to_model_xy(x, y)
                r[int(np.clip(round(my), 0, S - 1)), int(np.clip(round(mx), 0, S - 1))] = True
        box = getattr(prompt, "box", None)
        if box is not None:
            x0, y0 = self.to_model_xy(box[0], box[1])
            x1, y1 = self.to_model_xy(box[2], box[3])
            c0, c1 = sorted(int(np.clip(round(v), 0, S - 1)) for v in (x0, x1))
            r0, r1 = sorted(int(np.clip(round(v), 0, S - 1)) for v in (y0, y1))
            r[r0:r1 + 1, c0:c1 + 1] = True
        mask = getattr(prompt, "mask", None)
        if mask is not None and np.any(mask):
            from PIL import Image
            small = Image.fromarray(np.asarray(mask, np.uint8) * 255).resize((S, S), Image.BILINEAR)
            r |= np.asarray(small) >= 128
        return r if r.any() else None

    def __call__(self, key: str, logits, previous=None, prompt=None):
        """Logits of frame t -> logits with stray components dropped (and cavity holes filled).
        ``previous``: the previous frame's (kept) logits in propagation order; ``prompt``: the store
        entry of a prompted frame. Same shape, dtype and device as ``logits``."""
        if not self.enabled:
            return logits
        import torch

        lg = logits.detach().float().reshape(self.img_size, self.img_size).cpu().numpy()
        m = lg >= self.logit_cut
        ref = None
        if previous is not None:
            ref = previous.detach().float().reshape(self.img_size, self.img_size).cpu().numpy() >= self.logit_cut
        if prompt is not None:
            pr = self.prompt_raster(prompt)
            if pr is not None:
                ref = pr if ref is None else (ref | pr)
        kept = keep_connected(m, ref, self.margin, fill_holes=get_structure(key).key in CAVITIES)
        if np.array_equal(kept, m):
            return logits
        out = lg.copy()
        out[m & ~kept] = -MASK_LOGIT
        out[kept & ~m] = MASK_LOGIT
        return torch.from_numpy(out).reshape(logits.shape).to(device=logits.device, dtype=logits.dtype)


__all__ = ["keep_connected", "keep_connected_labels", "PromptedRule", "margin_for", "CAVITIES"]
