"""Prompt-free segmentation (clip segmenters: MediViSTA, MA-SAM) of a whole loop, and seeds from it.

`read_labels` runs ``segment_video`` and turns its class probabilities into a label map on the
cine grid, reading the heart a second time, magnified, where a config's ``heart_zoom`` asks (`auto_labels`: one
reading); `seed_masks` picks, on one frame of such a label map, the masks that seed a prompted
model's key frames (`Session.seed_from_auto`).
"""
from __future__ import annotations

import numpy as np

from ..heart_zoom import heart_extent, zoom_box
from ..hysteresis import grow_into_free
from ..models.fast import inference_context
from ..structures import get_structure
from .transforms import FrameTransform


def frame_probabilities(loaded, grey: np.ndarray, progress=None, cancel=None, precision: str = "auto"):
    """Yield (t, (C + 1, H, W) class probabilities on the cine grid) of a prompt-free model over ``grey``
    (T, H, W) float 0..255: ``segment_video`` once, each frame resized back bilinearly."""
    import torch
    T, H, W = grey.shape
    transform = FrameTransform(H, W, loaded.config.sam.img_size)
    with inference_context(torch.device(loaded.device), precision, width=loaded.config.sam.embed_dim):
        images = loaded.model.prepare_frames(torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32))
                                             .to(loaded.device))
        probs = loaded.model.segment_video(images, progress=progress, cancel=cancel)
        for t in range(T):
            yield t, transform.to_frame(probs[t])


def auto_labels(loaded, grey: np.ndarray, structures: list, progress=None, cancel=None,
                precision: str = "auto", grow=None, tidy=None) -> np.ndarray:
    """Prompt-free labels (T, H, W) uint8 of one reading of the whole frame (`read_labels` without a zoom)."""
    return read_labels(loaded, grey, structures, progress, cancel, precision, grow, tidy)[0]


def read_labels(loaded, grey: np.ndarray, structures: list, progress=None, cancel=None, precision: str = "auto",
                grow=None, tidy=None, zoom=None) -> tuple:
    """(labels (T, H, W) uint8, `HeartZoom` or None): `frame_probabilities`, argmax.
    ``grey`` (T, H, W) float 0..255. Classes not in ``structures`` become background. ``tidy``: applied to
    the whole label map (the connected-region rule); ``grow``: {structure: lower threshold}: after it, that
    class grows into background pixels connected to it where its own probability passes that threshold
    (`echosam.hysteresis`), so cavity holes are filled and strays dropped before, and growth adds none.
    ``zoom``: a config's ``heart_zoom`` (`echosam.heart_zoom`; None or {}: one reading): where the heart (every
    class the model knows, whatever ``structures`` asks for) is small in the frame, the labels are those of a
    second reading, magnified, of the rectangle around it, and background outside it."""
    first, seen, grown = _one_reading(loaded, grey, structures, progress, cancel, precision, grow)
    box = zoom_box(heart_extent(seen), grey.shape[1:], zoom["margin"], zoom["min"], zoom["max"]) if zoom else None
    if box is None:
        return _drawn(first, grown, tidy), None
    x0, y0, x1, y1 = box.box          # the first reading only placed the rectangle: it is not tidied nor grown
    again = None if progress is None else (lambda done, total, msg="": progress(done, total, f"magnified: {msg}"))
    inner, _, grown = _one_reading(loaded, grey[:, y0:y1 + 1, x0:x1 + 1], structures, again, cancel, precision, grow)
    labels = np.zeros_like(first)
    labels[:, y0:y1 + 1, x0:x1 + 1] = _drawn(inner, grown, tidy)
    return labels, box


def _one_reading(loaded, grey, structures, progress, cancel, precision, grow) -> tuple:
    """(labels by the argmax alone, (H, W) bool: the pixels any frame gives any class, [(label, lower threshold,
    its probability per frame, float16)] of the classes ``grow`` grows)."""
    import torch
    classes = [get_structure(c) for c in loaded.classes]
    T, H, W = grey.shape
    lut = np.zeros(len(classes) + 1, dtype=np.uint8)
    for i, s in enumerate(classes):
        lut[i + 1] = s.label if s.key in structures else 0
    out = np.zeros((T, H, W), dtype=np.uint8)
    seen = np.zeros((H, W), dtype=bool)
    grown = [(c + 1, s.label, float(grow[s.key]), []) for c, s in enumerate(classes)
             if s.key in structures and s.key in (grow or {})]
    for t, p in frame_probabilities(loaded, grey, progress, cancel, precision):
        best = p.argmax(0).cpu().numpy()
        out[t] = lut[best]
        seen |= best > 0
        for channel, _, _, kept in grown:
            kept.append(p[channel].to(torch.float16).cpu().numpy())
    return out, seen, [(label, low, kept) for _, label, low, kept in grown]


def _drawn(labels: np.ndarray, grown: list, tidy) -> np.ndarray:
    """``labels`` with ``tidy`` applied, then each of `_one_reading`'s ``grown`` classes grown."""
    labels = tidy(labels) if tidy is not None else labels
    for label, low, kept in grown:
        for t, prob in enumerate(kept):
            grow_into_free(labels[t], label, prob.astype(np.float32), low)
    return labels


def window_around(frame: int, n_frames: int, clip_frames: int) -> tuple:
    """(start, stop) of the ``clip_frames`` window centred on ``frame`` inside 0..n_frames."""
    start = max(0, min(frame - clip_frames // 2, n_frames - clip_frames))
    return start, min(n_frames, start + clip_frames)


def seed_masks(label_frame: np.ndarray, structures: list) -> list:
    """[(structure, (H, W) bool)] of the ``structures`` present on one label frame."""
    out = []
    for key in structures:
        m = label_frame == get_structure(key).label
        if m.any():
            out.append((key, m))
    return out
