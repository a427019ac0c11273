"""The imaging fan found from a cine's pixels alone (`detect_fan`; `echosam.fan` owns the region, its
sources and the crop mapping): what varies over the loop, minus coloured pixels, cleaned, the largest
component regularised to its convex hull, and a sector cut below its apex given its top back
(`sector_apex`). The steps and their reasons are in `echosam.fan`'s docstring.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

DYNAMIC_STD = 1.0               # grey levels (0..255): temporal std above which a pixel is "moving"
MIN_FAN_FRACTION = 0.02         # a fan covers at least 2 % of the frame (or of the DICOM region)
MIN_SOLIDITY = 0.75             # area / convex-hull area of the cleaned component
MAX_STD_FRAMES = 128            # frames used for the temporal statistics (evenly spread)
APEX_MAX_EXTENSION = 0.75       # a sector's edges are extended to their apex by at most 3/4 of the moving height
APEX_MIN_EXTENSION = 0.05       # ... and by more than 1/20 of it: less is a sector's rounded top, not a cut
FLAT_TOP = 0.8                  # a moving area whose top row is this wide (of the edges' width) is cut, not arced
APEX_DOWN_AT = 0.5              # a fan widest above half its height points down (upright: widest at 0.7-0.9)
SECOND_FAN_SHARE = 0.3          # another moving area this large (of the largest's size) is a second fan


def spread_frames(n_frames: int, most: int) -> np.ndarray:
    """At most ``most`` frame indices spread evenly over ``n_frames`` (first and last included)."""
    return np.unique(np.linspace(0, n_frames - 1, min(n_frames, most)).round().astype(int))


def temporal_std(frames: np.ndarray, max_frames: int = MAX_STD_FRAMES, chunk: int = 16) -> np.ndarray:
    """(T, H, W) -> (H, W) per-pixel standard deviation over time (float32), on at most ``max_frames``
    evenly spread frames, accumulated in float64 chunk by chunk (memory stays flat)."""
    f = np.asarray(frames)
    idx = spread_frames(f.shape[0], max_frames)
    s = np.zeros(f.shape[1:], np.float64)
    s2 = np.zeros(f.shape[1:], np.float64)
    for i in range(0, len(idx), chunk):
        c = f[idx[i:i + chunk]].astype(np.float64)
        s += c.sum(axis=0)
        s2 += (c * c).sum(axis=0)
    n = len(idx)
    return np.sqrt(np.maximum(s2 / n - (s / n) ** 2, 0.0)).astype(np.float32)


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius + radius      # a round disk (not a diamond) for small radii


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> its convex hull on pixel centres (scipy.spatial.ConvexHull); includes ``mask``."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull, QhullError

    edge = mask & ~ndimage.binary_erosion(mask)
    pts = np.argwhere(edge)[:, ::-1].astype(float)          # (x, y)
    try:
        hull = ConvexHull(pts)
    except (QhullError, ValueError):                        # a line or a point: nothing to regularise
        return mask.copy()
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    gy, gx = np.mgrid[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(float)
    inside = (grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-6).all(axis=1)
    out = np.zeros_like(mask)
    out[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = inside.reshape(gy.shape)
    return out | mask


def apex_at_bottom(mask: np.ndarray) -> bool:
    """Whether a fan mask is a sector with its apex at the bottom (an apex-down display): its widest rows (within
    2 % of the widest) lie, on the median, in the upper half of its height. An upright sector widens with depth
    down to where its arc begins, about 0.7-0.9 of its height."""
    rows = np.flatnonzero(np.asarray(mask).any(axis=1))
    if len(rows) < 6:
        return False
    widths = np.asarray(mask)[rows[0]:rows[-1] + 1].sum(axis=1)
    widest = np.flatnonzero(widths >= 0.98 * widths.max())
    return float(np.median(widest)) < APEX_DOWN_AT * (len(widths) - 1)


def detect_fan(frames: np.ndarray, coloured: Optional[np.ndarray] = None, within: Optional[tuple] = None,
               dynamic_std: float = DYNAMIC_STD) -> tuple:
    """Find the imaging fan in (T, H, W) grey frames from what varies over time and the fan's shape.

    ``coloured`` (H, W) bool: pixels that are never fan; ``within`` an inclusive box to search in.
    Returns ``(mask (H, W) bool, note)`` (note: "" or a line for the user, e.g. two fans found and the largest
    kept) or ``(None, reason)``. The steps are in the module docstring;
    morphology radii scale with the frame (about 1/160 of its short side, at least 1 pixel). The sector steps
    (its apex, its rim) read a sector with its apex at the top: a fan found apex down (`apex_at_bottom`) is found
    again on the frames turned upside down, and turned back."""
    mask, reason = _detect_upright(frames, coloured, within, dynamic_std)
    if mask is None or not apex_at_bottom(mask):
        return mask, reason
    H = np.asarray(frames).shape[1]
    flip = None if within is None else (within[0], H - 1 - within[3], within[2], H - 1 - within[1])
    again, note = _detect_upright(np.asarray(frames)[:, ::-1], None if coloured is None else coloured[::-1], flip,
                                  dynamic_std)
    return (np.ascontiguousarray(again[::-1]), note) if again is not None else (mask, reason)


def _detect_upright(frames: np.ndarray, coloured: Optional[np.ndarray], within: Optional[tuple],
                    dynamic_std: float) -> tuple:
    """`detect_fan`'s steps, for a sector with its apex at the top."""
    from scipy import ndimage

    f = np.asarray(frames)
    T, H, W = f.shape
    if T < 2:
        return None, "a single frame: nothing varies over time"
    x0, y0, x1, y1 = within if within is not None else (0, 0, W - 1, H - 1)
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    sub = f[:, y0:y1 + 1, x0:x1 + 1]
    if f.dtype != np.uint8:                                  # other types: the model's 0..255 scale
        lo, hi = float(f.min()), float(f.max())
        sub = (sub.astype(np.float32) - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros(sub.shape, np.float32)
    moving = temporal_std(sub) > dynamic_std
    never = None
    if coloured is not None:
        never = ndimage.binary_dilation(coloured[y0:y1 + 1, x0:x1 + 1], iterations=1)
        moving &= ~never
    if moving.sum() < MIN_FAN_FRACTION * area:
        return None, "nothing in the frame varies over the loop"
    r = max(1, int(round(min(H, W) / 160)))
    disk = _disk(r)
    pad = 2 * r + 1                                          # so that closing/opening treat the border alike
    m = np.pad(moving, pad)
    m = ndimage.binary_closing(m, structure=disk)
    m = ndimage.binary_fill_holes(m)
    m = ndimage.binary_opening(m, structure=disk)[pad:-pad, pad:-pad]
    lab, n = ndimage.label(m, structure=np.ones((3, 3), bool))
    if n == 0:
        return None, "only thin or scattered moving pixels"
    sizes = np.bincount(lab.ravel())[1:]
    comp = lab == (int(np.argmax(sizes)) + 1)
    if comp.sum() < MIN_FAN_FRACTION * area:
        return None, "the moving area is too small to be an imaging fan"
    # a second moving area of a like size: a dual or biplane display, two fans side by side
    others = int((sizes >= max(MIN_FAN_FRACTION * area, SECOND_FAN_SHARE * sizes.max())).sum()) - 1
    hull = convex_hull_mask(comp)
    solidity = comp.sum() / hull.sum()
    if solidity < MIN_SOLIDITY:
        return None, f"the moving area is not fan-shaped (solidity {solidity:.2f})"
    apex = sector_apex(comp, r)
    if apex is not None and not _static_bright(sub, apex).any():    # never extend over screen text
        hull = convex_hull_mask(comp | apex)
    else:
        apex = None
    if never is not None:
        hull &= ~never
    hull &= ~_never_imaged_rim(hull, moving, r, apex)
    out = np.zeros((H, W), bool)
    out[y0:y1 + 1, x0:x1 + 1] = hull
    if others:
        cols = np.flatnonzero(out.any(axis=0))
        return out, (f"{others + 1} imaging fans side by side (a dual or biplane display): segmenting the largest, "
                     f"x {cols[0]}..{cols[-1]}; --region x0,y0,x1,y1 (the panel: crop the sequence) for another")
    return out, ""


def _never_imaged_rim(hull: np.ndarray, moving: np.ndarray, r: int, apex: Optional[np.ndarray] = None) -> np.ndarray:
    """The still pixels of the hull's outer rim (``r + 1`` pixels wide), away from the apex wedge that
    `sector_apex` gave back (``apex``: still by definition, and narrow: a trim would eat the LV apex). A hull
    through pixel centres and the closing round a sector's arc take in pixels the scanner never imaged
    (black and still on every frame), where a label would lie outside the fan. On 60 simulated captures
    (`bench/fan_screens.py`, 20 each of the train, outside and outside_dark ranges) 19 found fans reached
    up to 235 such pixels, none with this trim and `sector_apex`'s rounded-top rule. The price: a far field
    imaged black loses its outermost pixels (up to 0.9 % more of a loop's labels; 1.4 % on a far field all black)."""
    from scipy import ndimage

    eight = np.ones((3, 3), bool)
    rim = hull & ~ndimage.binary_erosion(hull, structure=eight, iterations=r + 1) & ~moving
    if apex is not None:
        rim &= ~ndimage.binary_dilation(apex, structure=eight, iterations=r + 2)
    return rim


def sector_apex(comp: np.ndarray, r: int = 1) -> Optional[np.ndarray]:
    """The part of a sector above its moving part, when that part starts in a cut across it; None otherwise.

    On a dark display the near field can be black and still (no speckle to vary), so the moving area
    starts some way down the sector, cut across it, and the apex of an apical view's LV lies in the part
    left out. The sector's two straight edges (least-squares lines through each row's first and last
    pixel, between the top and the widest row, where the bottom arc begins) are extended up to where they
    meet. Only when they are straight and diverge downwards, the moving area is, just below its top, at
    least ``FLAT_TOP`` of the edges' width there (a full cut, not a narrow or ragged top), and the apex
    is at most ``APEX_MAX_EXTENSION`` of the fan's height above the cut and more than ``APEX_MIN_EXTENSION``
    (a phased array's sector starts in a small rounded top a few pixels below where its edges meet; the
    wedge above it was never imaged, and labels there would lie outside the fan). A curved array's fan looks the
    same (its arc is such a cut) and gets the black wedge above its arc too: echocardiography uses
    phased arrays, whose sectors start at the apex. ``r``: the morphology radius of `detect_fan` (the
    margin kept from the cut and the arc). Returns an (H, W) bool mask of the rows added."""
    rows = np.flatnonzero(comp.any(axis=1))
    if len(rows) < 20:
        return None
    left = np.array([np.flatnonzero(comp[y])[0] for y in rows], float)
    right = np.array([np.flatnonzero(comp[y])[-1] for y in rows], float)
    top, height = rows[0], rows[-1] - rows[0]
    widest = rows[int(np.argmax(right - left))]
    use = (rows > top + 2 * r + 2) & (rows < widest - 2 * r - 2)
    if use.sum() < 10:
        return None
    ys = rows[use].astype(float)
    fit_l, fit_r = np.polyfit(ys, left[use], 1), np.polyfit(ys, right[use], 1)
    scatter = max(np.std(left[use] - np.polyval(fit_l, ys)), np.std(right[use] - np.polyval(fit_r, ys)))
    if scatter > 1.0 + r or fit_l[0] >= 0 or fit_r[0] <= 0:       # not two straight edges diverging downwards
        return None
    y_apex = (fit_r[1] - fit_l[1]) / (fit_l[0] - fit_r[0])
    if not (max(2 * r + 1, APEX_MIN_EXTENSION * height) < top - y_apex <= APEX_MAX_EXTENSION * height):
        return None
    first = int(np.flatnonzero(use)[0])                            # just below the cut (morphology rounds its row)
    if (right[first] - left[first]) < FLAT_TOP * (np.polyval(fit_r, rows[first]) - np.polyval(fit_l, rows[first])):
        return None
    out = np.zeros_like(comp)
    for y in range(max(int(np.ceil(y_apex)), 0), top):
        x0, x1 = int(np.ceil(np.polyval(fit_l, y))), int(np.floor(np.polyval(fit_r, y)))
        out[y, max(x0, 0):min(x1, comp.shape[1] - 1) + 1] = True
    return out if out.any() else None


def _static_bright(frames: np.ndarray, where: np.ndarray, level: float = 150.0, n: int = 4) -> np.ndarray:
    """Pixels of ``where`` bright on ``n`` frames spread over the loop: static text or graphics."""
    f = np.asarray(frames)
    idx = spread_frames(f.shape[0], n)
    return where & (f[idx].min(axis=0) > level)
