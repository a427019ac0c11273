"""Prompt-consistent output: a structure stays one region where it was prompted.

A video model sometimes adds a second, stray blob of a structure far from where the user prompted it
(a bright wall elsewhere, the other ventricle); once in memory such a blob propagates. The rule
below drops those blobs, per frame and structure (`keep_connected`):

1. label the structure's connected components (8-connectivity, ``scipy.ndimage.label``);
2. the *anchor* is the component that overlaps the reference, grown by ``margin`` pixels, the most.
   The reference is the previous frame's kept mask in propagation order (forward or backward from the
   key frame); on a prompted frame with no previous frame, the prompt itself (its positive points, its
   box, its mask). When nothing overlaps (or there is no reference: frame 0 of a prompt-free run) the
   largest component is the anchor;
3. kept: the anchor, every component within ``margin`` pixels of it (a structure split by a thin gap),
   and on a prompted frame every component touching the grown prompt; everything else is dropped;
   b. a structure that wraps a cavity (`Structure.wraps`: the myocardium around the LV) is one horseshoe
   that a 2D view or a model can break into two walls far apart; it also keeps every component within
   ``margin`` of that cavity on the same frame (when the cavity is segmented: cavities run first) and
   every component with at least half of its pixels in the grown reference (a wall that continues).
   Its pixels more than ``margin`` inside that cavity are dropped first: MemSAM propagates each structure
   on its own, and a myocardium that once strays into the cavity (a bright papillary muscle) stays in
   memory, grows, and takes the LV's pixels where the label map is composed (one held-out loop: LV Dice
   0.945 propagated alone, 0.779 next to such a myocardium);
4. holes of the cavities (LV, LA: `CAVITIES`) are filled, never those of the myocardium (a horseshoe:
   once the model closes its base, filling it would swallow the LV cavity).
``margin`` is `margin_for` the image side: 2 % of it, at least 2 pixels.

Why an anchor and not "every component overlapping the previous mask (plus the largest)": a fragment
kept once becomes part of the next frame's reference, so with that rule it can drift away frame after
frame and stay. Measured on the real SonoSite cine of pydicom-data (120 frames, fan crop, bundled tiny
models; ``bench/connected_rule.py``), frames with a component more than 20 px from the structure's main
one: MemSAM LV 21 (rule off) / 5 (overlap rule) / 0 (this rule); prompt-free MediViSTA LV, MYO, LA
92, 120, 112 (off) / 3, 37, 89 (overlap + largest) / 0, 0, 0 (this rule). Phantom Dice (no stray blobs)
is unchanged; the prompt-free rule costs about 0.8 s on 120 frames x 3 structures of 512 x 361 pixels.
Rule 3b (the myocardium's walls): before it, the rule kept one wall of a horseshoe the model had opened
at the apex and dropped the other (MA-SAM's MYO Dice on the whole-beat SIMUS loops 0.737; with 3b 0.801,
every other Dice unchanged). The bundled sim MA-SAM on the real cine, frames with a component farther than
20 px from the structure's main one (for the myocardium: and from the LV): LV, MYO, LA 23, 19, 76 (off)
/ 0, 3, 0 (this rule: a wall piece kept beside the LV can follow itself away from it for a few frames).

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

from .structures import get_structure, wrapped_first

CAVITIES = ("lv", "la")     # structures whose holes are filled
MASK_LOGIT = 10.0           # the logit a kept/dropped pixel is set to (as a user mask enters memory)
MARGIN_FRACTION = 0.02      # reference dilation: 2 % of the image side ...
MIN_MARGIN = 2              # ... and at least 2 pixels

_EIGHT = np.ones((3, 3), bool)


def margin_for(side: int) -> int:
    """Dilation of the reference, in pixels, for an image of ``side`` pixels."""
    return max(MIN_MARGIN, int(round(MARGIN_FRACTION * side)))


def _grow(mask: np.ndarray, margin: int) -> np.ndarray:
    from scipy import ndimage
    return ndimage.binary_dilation(mask, structure=_EIGHT, iterations=int(margin)) if margin > 0 else mask


def _window(masks, margin: int, shape) -> tuple:
    """The slices of the bounding box of the given masks, padded by ``margin + 1`` pixels."""
    rows = np.zeros(shape[0], bool)
    cols = np.zeros(shape[1], bool)
    for m in masks:
        if m is not None:
            rows |= m.any(axis=1)
            cols |= m.any(axis=0)
    r, c = np.flatnonzero(rows), np.flatnonzero(cols)
    pad = int(margin) + 1
    return (slice(max(0, r[0] - pad), r[-1] + pad + 1), slice(max(0, c[0] - pad), c[-1] + pad + 1))


def keep_connected(mask: np.ndarray, reference: Optional[np.ndarray] = None, margin: int = MIN_MARGIN,
                   fill_holes: bool = False, prompt: Optional[np.ndarray] = None,
                   beside: Optional[np.ndarray] = None, continuing: bool = False) -> np.ndarray:
    """(H, W) bool -> the components to keep by the module's rule (bool, same shape).

    ``reference`` (H, W) bool: the previous frame's kept mask (None: none); ``prompt`` (H, W) bool: the
    prompt's raster on a prompted frame (positive points, box, mask); ``margin`` pixels. The anchor is
    the component overlapping the grown reference most (the prompt when there is no reference; the
    largest when nothing overlaps); kept: the anchor, components within ``margin`` of it, and components
    touching the grown prompt. For a structure that wraps a cavity (rule 3b): ``beside`` (H, W) bool, the
    cavity on the same frame, keeps the components within ``margin`` of it; ``continuing`` keeps the
    components with at least half of their pixels inside the grown reference."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    out = m.copy()
    if not m.any():
        return out
    ref = reference if reference is not None and reference.any() else None
    pr = prompt if prompt is not None and prompt.any() else None
    bs = beside if beside is not None and beside.any() else None
    win = _window([m, ref, pr, bs], margin, m.shape)   # everything below happens in this window
    mw = m[win]
    if bs is not None:                                  # a wall never lies deep inside the cavity it wraps
        mw = mw & ~ndimage.binary_erosion(bs[win], structure=_EIGHT, iterations=max(int(margin), 1))
    lab, n = ndimage.label(mw, structure=_EIGHT)
    if n > 1:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        sizes[0] = 0
        keep = np.zeros(n + 1, bool)
        if pr is not None:
            keep[np.unique(lab[_grow(pr[win], margin) & mw])] = True
        anchor_ref = ref if ref is not None else pr
        overlap = np.zeros(n + 1, np.int64)
        if anchor_ref is not None:
            overlap = np.bincount(lab[_grow(anchor_ref[win], margin) & mw], minlength=n + 1)
            overlap[0] = 0
        anchor = int(np.argmax(overlap)) if overlap.max() > 0 else int(np.argmax(sizes))
        keep[np.unique(lab[_grow(lab == anchor, margin) & mw])] = True
        if bs is not None:
            keep[np.unique(lab[_grow(bs[win], margin) & mw])] = True
        if continuing and ref is not None:
            keep |= 2 * overlap >= sizes
        keep[0] = False
        mw = keep[lab]
    if fill_holes:
        mw = ndimage.binary_fill_holes(mw)
    out[win] = mw
    return out


def keep_connected_labels(labels: np.ndarray, structures: Iterable[str], enabled: bool = True,
                          margin: Optional[int] = None) -> np.ndarray:
    """The rule on a prompt-free (T, H, W) label map, frame by frame in time order: per structure, the
    reference is the previous frame's kept mask (frame 0: none, so its largest component anchors the loop);
    cavity holes are filled where they are background. Dropped pixels become background. A new array."""
    out = np.array(labels, copy=True)
    if not enabled:
        return out
    T, H, W = out.shape
    margin = margin_for(min(H, W)) if margin is None else margin
    keys = wrapped_first(structures)
    for key in keys:
        s = get_structure(key)
        cavity = get_structure(s.wraps).label if s.wraps in keys else None
        prev = None
        for t in range(T):
            m = out[t] == s.label
            beside = out[t] == cavity if cavity is not None else None
            kept = keep_connected(m, prev, margin, fill_holes=s.key in CAVITIES, beside=beside,
                                  continuing=s.wraps is not None)
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

    def _plane(self, logits) -> np.ndarray:
        """Logits of one frame (any shape of S*S values, any device) -> (S, S) float32 on the host."""
        return logits.detach().float().reshape(self.img_size, self.img_size).cpu().numpy()

    def __call__(self, key: str, logits, previous=None, prompt=None, beside=None):
        """Logits of frame t -> logits with stray components dropped (and cavity holes filled).
        ``previous``: the previous frame's (kept) logits in propagation order; ``prompt``: the store
        entry of a prompted frame; ``beside``: for a structure that wraps a cavity, the cavity's logits on
        the same frame (None: not segmented). Same shape, dtype and device as ``logits``."""
        if not self.enabled:
            return logits
        import torch

        lg = self._plane(logits)
        m = lg >= self.logit_cut
        ref = None if previous is None else self._plane(previous) >= self.logit_cut
        pr = self.prompt_raster(prompt) if prompt is not None else None
        cav = None if beside is None else self._plane(beside) >= self.logit_cut
        s = get_structure(key)
        kept = keep_connected(m, ref, self.margin, fill_holes=s.key in CAVITIES, prompt=pr, beside=cav,
                              continuing=s.wraps is not None)
        if np.array_equal(kept, m):
            return logits
        out = lg.copy()
        out[m & ~kept] = -MASK_LOGIT
        out[kept & ~m] = MASK_LOGIT
        return torch.from_numpy(out).reshape(logits.shape).to(device=logits.device, dtype=logits.dtype)


__all__ = ["keep_connected", "keep_connected_labels", "PromptedRule", "margin_for", "CAVITIES"]
