"""Heart zoom: a prompt-free model reads a loop a second time, magnified, where the heart is small in the fan.

A prompt-free model at 128 px sees the whole fan stretched to its input. Trained on fans 120-190 mm deep, it
reads the thin myocardium worst where the fan is deeper and the heart takes less of it (the bundled MediViSTA on
`draw9`: myocardial Dice 0.80 on the shallowest quarter of fans, 0.72 on the deepest, past 193 mm). The model's
first reading says where the heart is, so a config's ``heart_zoom`` (``{"margin": m, "min": a, "max": z}``) asks
for a second reading of the rectangle around it: the heart's extent over the whole loop grown by ``m`` of its size
per side, magnified evenly (the rectangle keeps the frame's aspect, so the model sees the heart's shape as in
training, where crops are scaled by up to 1.3) by at most ``z``. Where that magnification is under ``a`` (the heart
already fills the frame, as in the training fans) the first reading stands. Pixels outside the rectangle are
background. The bundled MediViSTA's setting was chosen on selection loops and adopted by a pre-registered test
(docs/evaluation.md "Small hearts in deep fans").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class HeartZoom:
    """Where a second reading was magnified: ``box`` (x0, y0, x1, y1), inclusive pixels of the frame the model
    read first, and the ``factor`` it magnifies that frame by."""

    box: tuple
    factor: float

    def note(self) -> str:
        x0, y0, x1, y1 = self.box
        return (f"the heart takes a small part of this fan, so the prompt-free model read the loop a second time, "
                f"magnified x{self.factor:.2f} around it (x {x0}..{x1}, y {y0}..{y1} of the region)")

    def to_dict(self) -> dict:
        return {"box": [int(v) for v in self.box], "factor": round(float(self.factor), 3)}


def zoom_problem(spec) -> Optional[str]:
    """What is wrong with a config's ``heart_zoom`` (``{}`` off, or ``{"margin": >= 0, "min": >= 1, "max": >= min}``);
    None if nothing is."""
    if spec is None or spec == {}:
        return None
    if not isinstance(spec, dict) or set(spec) != {"margin", "min", "max"}:
        return f"heart_zoom {spec!r} must be {{}} or {{'margin': m, 'min': a, 'max': z}}"
    m, a, z = spec["margin"], spec["min"], spec["max"]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (m, a, z)) or not (m >= 0 and 1 <= a <= z):
        return f"heart_zoom needs a margin >= 0 and magnifications 1 <= min <= max; got {spec!r}"
    return None


def heart_extent(seen: np.ndarray) -> Optional[tuple]:
    """(x0, y0, x1, y1) of the heart from ``seen`` (H, W), the pixels any frame labels: its largest connected part
    (a stray blob elsewhere does not stretch it); None when nothing is labelled."""
    seen, n = ndimage.label(np.asarray(seen, bool))
    if n == 0:
        return None
    ys, xs = np.nonzero(seen == 1 + int(np.argmax(np.bincount(seen.ravel())[1:])))
    return (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def zoom_box(extent, shape_hw, margin: float, min_zoom: float, max_zoom: float) -> Optional[HeartZoom]:
    """The rectangle of an (H, W) frame, with the frame's aspect, around ``extent`` grown by ``margin`` of its size
    per side and magnified by at most ``max_zoom``; kept inside the frame, centred on the extent where it can be.
    None when the magnification would be under ``min_zoom`` (or there is no extent)."""
    if extent is None:
        return None
    H, W = (int(v) for v in shape_hw)
    x0, y0, x1, y1 = (float(v) for v in extent)
    need_w, need_h = (x1 - x0 + 1) * (1 + 2 * margin), (y1 - y0 + 1) * (1 + 2 * margin)
    factor = min(float(max_zoom), W / need_w, H / need_h)
    if factor < max(float(min_zoom), 1.0 + 1e-6):
        return None
    w, h = int(round(W / factor)), int(round(H / factor))
    left = int(round(min(max((x0 + x1 + 1 - w) / 2, 0), W - w)))
    top = int(round(min(max((y0 + y1 + 1 - h) / 2, 0), H - h)))
    return HeartZoom((left, top, left + w - 1, top + h - 1), W / w)


__all__ = ["HeartZoom", "zoom_problem", "heart_extent", "zoom_box"]
