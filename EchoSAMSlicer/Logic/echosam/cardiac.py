"""Left-ventricle measurements from label maps: area, long axis, volume, ED/ES, ejection fraction.

Inputs are label maps ``(T, H, W)`` in the CAMUS convention of `structures.py` (1 LV cavity,
2 myocardium, 3 left atrium), the pixel spacing ``(row_mm, col_mm)`` and frame times in seconds.

Long axis (per frame):
- **Mitral plane**: the LV-cavity pixels that touch the LA (4-neighbourhood of the LA mask).
  Its two end points are the pair of those pixels farthest apart; the plane's midpoint is their
  mean. Without an LA contact (LV-only labels) the cavity's minimum-area bounding rectangle
  (rotating calipers on the convex hull, `scipy.spatial.ConvexHull`) gives the axis direction
  (its long side); the base is the end of the axis next to which the cavity is wider (the apex is
  the narrow end), and the mitral plane is the line through the cavity's last pixel at that end,
  perpendicular to the axis, spanning the cavity's width in the band within 1 pixel (or 3 % of the
  length) of it.
- **Apex**: the cavity pixel farthest from the mitral-plane midpoint.
- **L** (mm): the distance from the apex to the mitral-plane midpoint (pixel centres, anisotropic
  spacing applied) plus one pixel along the axis, because the extreme pixel centres lie half a
  pixel inside the cavity boundary at each end (areas count whole pixels, so both use the boundary).

Volumes (ml = 1000 mm^3):
- Single-plane **area-length**: ``V = 8 A^2 / (3 pi L)`` (Dodge et al. 1960; Lang et al. 2015
  ASE/EACVI chamber quantification guideline, JASE 28:1-39), A in mm^2, L in mm.
- Single-plane **method of disks** (modified Simpson's rule, same guideline): the long axis is
  cut into 20 slabs of height ``h = L / 20`` perpendicular to it; each slab's disk diameter is the
  cavity width there, taken as (cavity area inside the slab) / h (pixels split 3 x 3 so that slab
  areas do not alias with pixel rows), and ``V = sum pi (d_i / 2)^2 h``.

ED/ES (per cardiac cycle, `cardiac_cycles.py`): a frame whose volume jumps away from both neighbours by over
0.3 of the curve's range while they agree (`one_frame_glitches`: a model's mask failing on one frame; no
heart moves that fast) is listed in ``glitch_frames`` and named in the message; when one would be an ED or
ES frame, glitches are read as their neighbours' mean and ED/ES found again (one bad frame never becomes
the EDV or ESV; elsewhere the curve is left as it is: on the selection loops, smoothing every glitch moved
two EFs away from the truth and none towards it). The area-length volume curve is smoothed with a Gaussian of
``smooth_s`` seconds (converted with the median frame interval, so any frame rate works); ED are
local maxima and ES local minima at least ``min_cycle_s`` seconds apart
(`scipy.signal.find_peaks` with a prominence of 10 % of the curve range). Each beat is an ED
followed by the lowest point (an ES) before the next ED; ``EF = (EDV - ESV) / EDV`` in percent.
A first/last frame counts as ED (ES) only when it is as high (low) as the interior ED (ES)
values (within 10 % of the range) and the curve is flat there (its first/last step below half the steepest step),
because a loop that starts mid-systole must not count its first frame as ED. When no ED->ES pair exists, EF comes from the global maximum and minimum and
the result is flagged ``status = "single partial cycle"``; for a model's labels (``predicted``) over a loop
longer than ``PARTIAL_CYCLE_MAX_S`` that is refused instead (``status = "no cardiac cycle"``, no EF), and a
predicted "beat" whose ED->ES takes longer than ``MAX_SYSTOLE_S`` is not a beat.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from .cardiac_cycles import detect_ed_es, one_frame_glitches, sparse_systole_note
from .errors import EchoSAMError

LV, MYO, LA = 1, 2, 3
N_DISKS = 20
EF_PHYSIOLOGICAL = (5.0, 85.0)   # percent: a model's EF outside this range is reported as implausible
# seconds: a heart at 30 bpm or faster shows an ED->ES beat within 2 s, so a model's LV curve over a longer
# loop with none (e.g. a mask that slowly drifts or shrinks) is no cycle, not a "single partial" one
PARTIAL_CYCLE_MAX_S = 2.0
# seconds: systole (ED to ES) lasts about 0.2-0.5 s at any heart rate; a model's "beat" that takes longer is a
# drifting mask, not a contraction
MAX_SYSTOLE_S = 1.0
SUB = 3            # sub-pixels per pixel side for the disk slabs


@dataclass
class LongAxis:
    """Long axis of one frame, points as (x=col, y=row) in pixels; ``length_mm`` in mm."""

    base_mid: np.ndarray
    apex: np.ndarray
    mitral: tuple            # the two mitral-plane end points (pixels)
    length_mm: float
    method: str              # "la_border" or "bounding_box"
    end_pad_mm: float = 0.0  # half a pixel along the axis: the boundary lies this far beyond each end pixel


@dataclass
class Beat:
    ed_frame: int
    es_frame: int
    ed_time_s: float
    es_time_s: float
    edv_ml: float
    esv_ml: float
    ef_percent: float
    complete_cycle: bool     # True when a next ED closes the cycle


@dataclass
class CardiacResult:
    """Per-frame curves (arrays of shape (T,)) and the clinical summary."""

    times_s: np.ndarray
    area_mm2: np.ndarray
    length_mm: np.ndarray
    volume_al_ml: np.ndarray          # area-length
    volume_disks_ml: np.ndarray       # method of disks
    ed_frames: list = field(default_factory=list)
    es_frames: list = field(default_factory=list)
    beats: list = field(default_factory=list)
    ef_percent: float = float("nan")  # mean over beats
    edv_ml: float = float("nan")
    esv_ml: float = float("nan")
    glitch_frames: list = field(default_factory=list)   # one-frame volume jumps (`one_frame_glitches`)
    status: str = "no LV"             # "cycles", "single partial cycle", "no cardiac cycle", "too short", "no LV", "no plausible LV",
    #                                   "implausible EF" (a model's EF outside EF_PHYSIOLOGICAL)
    #                                   "prompt-dependent EF" (`echosam.ef_check`: flagged by the pipeline)
    message: str = ""

    def summary(self) -> dict:
        return {"ef_percent": _r(self.ef_percent), "edv_ml": _r(self.edv_ml), "esv_ml": _r(self.esv_ml),
                "ed_frames": list(map(int, self.ed_frames)), "es_frames": list(map(int, self.es_frames)),
                "n_beats": len(self.beats), "status": self.status, "message": self.message,
                "glitch_frames": list(map(int, self.glitch_frames)),
                # the fewest frames from an ED to its ES (`cardiac_cycles.sparse_systole_note`); None without a beat
                "systole_frames": min((b.es_frame - b.ed_frame for b in self.beats), default=None),
                "beats": [{k: (_r(v) if isinstance(v, float) else v) for k, v in asdict(b).items()} for b in self.beats]}


def _r(v: float, nd: int = 4):
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


# ---- geometry ----------------------------------------------------------------------------------
def _points_mm(yx: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """(N, 2) row/col indices -> (N, 2) x/y in mm."""
    return np.stack([yx[:, 1] * spacing[1], yx[:, 0] * spacing[0]], axis=1).astype(float)


def _farthest_pair(p: np.ndarray) -> tuple:
    if len(p) == 1:
        return 0, 0
    if len(p) > 3:
        try:
            idx = ConvexHull(p).vertices
        except QhullError:
            idx = np.arange(len(p))
    else:
        idx = np.arange(len(p))
    q = p[idx]
    d = ((q[:, None, :] - q[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(idx[i]), int(idx[j])


def _min_area_rect_axis(p: np.ndarray) -> np.ndarray:
    """Unit vector of the long side of the minimum-area bounding rectangle of points p (mm)."""
    try:
        hull = p[ConvexHull(p).vertices]
    except (QhullError, ValueError):
        hull = p
    best, best_dir = np.inf, np.array([0.0, 1.0])
    for k in range(len(hull)):
        e = hull[(k + 1) % len(hull)] - hull[k]
        n = np.linalg.norm(e)
        if n == 0:
            continue
        u = e / n
        v = np.array([-u[1], u[0]])
        su, sv = hull @ u, hull @ v
        wu, wv = np.ptp(su), np.ptp(sv)
        if wu * wv < best:
            best = wu * wv
            best_dir = u if wu >= wv else v
    return best_dir


def long_axis(lv: np.ndarray, la: Optional[np.ndarray], spacing: Sequence[float] = (1.0, 1.0)) -> Optional[LongAxis]:
    """Long axis of one LV cavity mask (H, W) bool; ``la`` (H, W) bool or None. None if no LV."""
    yx = np.argwhere(lv)
    if len(yx) == 0:
        return None
    pts = _points_mm(yx, spacing)
    method = "bounding_box"
    border = np.zeros(0, dtype=int)
    if la is not None and la.any():
        touch = ndimage.binary_dilation(la, structure=ndimage.generate_binary_structure(2, 1)) & lv
        border = np.flatnonzero(touch[yx[:, 0], yx[:, 1]])
    if len(border) >= 2:
        method = "la_border"
        bp = pts[border]
        i, j = _farthest_pair(bp)
        m0, m1 = bp[i], bp[j]
    else:
        axis = _min_area_rect_axis(pts) if len(pts) >= 3 else np.array([0.0, 1.0])
        s = pts @ axis
        lo, hi = s.min(), s.max()
        band = max(1.0 * max(spacing), 0.03 * (hi - lo))
        perp = np.array([-axis[1], axis[0]])
        ends = []
        for sel in (s <= lo + band, s >= hi - band):
            w = pts[sel] @ perp
            ends.append((np.ptp(w) if len(w) else 0.0, sel))
        # the base is the wider end (count pixels near each end as a tie-breaker)
        near_lo = np.count_nonzero(s <= lo + 0.15 * (hi - lo))
        near_hi = np.count_nonzero(s >= hi - 0.15 * (hi - lo))
        base_lo = near_lo >= near_hi
        sel = ends[0][1] if base_lo else ends[1][1]
        edge = lo if base_lo else hi          # the base line: the cavity's extent along the axis
        w = pts[sel] @ perp
        m0 = axis * edge + perp * w.min()
        m1 = axis * edge + perp * w.max()
    mid = (m0 + m1) / 2.0
    d = np.linalg.norm(pts - mid, axis=1)
    k = int(np.argmax(d))
    to_px = np.array([1.0 / spacing[1], 1.0 / spacing[0]])
    # pixel centres lie half a pixel inside the cavity boundary at both ends: add one pixel along the axis
    u = (pts[k] - mid) / d[k] if d[k] > 0 else np.array([0.0, 1.0])
    pix = float(np.hypot(u[0] * spacing[1], u[1] * spacing[0]) / np.hypot(u[0], u[1]) if d[k] > 0 else max(spacing))
    return LongAxis(base_mid=mid * to_px, apex=pts[k] * to_px, mitral=(m0 * to_px, m1 * to_px),
                    length_mm=float(d[k] + pix), method=method, end_pad_mm=0.5 * pix)


def disks_volume_ml(lv: np.ndarray, axis: LongAxis, spacing: Sequence[float] = (1.0, 1.0),
                    n_disks: int = N_DISKS) -> float:
    """Single-plane method of disks (ml); see the module docstring."""
    L = axis.length_mm
    if L <= 0:
        return 0.0
    sp = np.array([spacing[1], spacing[0]], dtype=float)
    mid, apex = axis.base_mid * sp, axis.apex * sp
    u = (apex - mid) / L
    # each pixel is split into SUB x SUB sub-pixels so that the slab areas do not alias with the
    # pixel rows (4 vs 5 rows per slab would bias sum(d^2) upwards)
    yx = np.argwhere(lv).astype(float)
    off = (np.arange(SUB) + 0.5) / SUB - 0.5
    oy, ox = np.meshgrid(off, off, indexing="ij")
    sub = (yx[:, None, :] + np.stack([oy.ravel(), ox.ravel()], 1)[None]).reshape(-1, 2)
    s = (_points_mm(sub, spacing) - mid) @ u + axis.end_pad_mm
    h = L / n_disks
    pix = float(spacing[0] * spacing[1]) / (SUB * SUB)
    idx = np.clip(np.floor(s / h).astype(int), 0, n_disks - 1)
    inside = (s >= -h) & (s <= L + h)
    areas = np.bincount(idx[inside], minlength=n_disks) * pix
    d = areas / h
    return float(np.sum(np.pi * (d / 2.0) ** 2 * h) / 1000.0)


# ---- curves -------------------------------------------------------------------------------------
def lv_area_mm2(labels: np.ndarray, pixel_area_mm2: float, label: int = LV) -> np.ndarray:
    """(T, H, W) labels -> (T,) LV cavity area in mm^2."""
    labels = _check_labels(labels)
    return (labels == label).reshape(labels.shape[0], -1).sum(axis=1) * float(pixel_area_mm2)


def _check_labels(labels) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.size == 0:
        raise EchoSAMError(f"Labels must be a (T, H, W) label map; got shape {a.shape}.")
    return a


def volume_curves(labels: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)) -> dict:
    """Per-frame area (mm^2), long-axis length (mm) and volumes (ml, both methods), each (T,)."""
    labels = _check_labels(labels)
    T = labels.shape[0]
    pix = float(spacing[0] * spacing[1])
    out = {k: np.zeros(T) for k in ("area_mm2", "length_mm", "volume_al_ml", "volume_disks_ml")}
    for t in range(T):
        lv = labels[t] == LV
        ax = long_axis(lv, labels[t] == LA, spacing)
        if ax is None or ax.length_mm <= 0:
            continue
        A = lv.sum() * pix
        out["area_mm2"][t] = A
        out["length_mm"][t] = ax.length_mm
        out["volume_al_ml"][t] = 8.0 * A * A / (3.0 * np.pi * ax.length_mm) / 1000.0
        out["volume_disks_ml"][t] = disks_volume_ml(lv, ax, spacing)
    return out


MIN_IMAGE_STD = 0.5          # grey levels (uint8 cines): below this a cine shows nothing


def implausible_lv(frames: Optional[np.ndarray], labels: np.ndarray, predicted: bool = False) -> Optional[str]:
    """Why no LV measured on ``frames`` (T, H, W) can be trusted, or None. A cine without an image
    (one grey value, e.g. all black) has no LV whatever a model outputs; nor does a ``predicted`` loop
    where the LV is found in fewer than half the frames (a cavity does not vanish during a heartbeat;
    a user's label map may annotate only some frames, e.g. ED and ES)."""
    if frames is not None:
        f = np.asarray(frames)
        if f.size == 0 or np.ptp(f) == 0 or (f.dtype == np.uint8 and float(f.std()) < MIN_IMAGE_STD):
            return "the cine shows no image (its frames are one flat grey)"
    present = (np.asarray(labels) == 1).reshape(len(labels), -1).any(1)
    if predicted and present.any() and present.mean() < 0.5:
        return f"the LV is found in only {int(present.sum())} of {len(labels)} frames"
    return None


def analyse(labels: np.ndarray, spacing: Sequence[float] = (1.0, 1.0), times_s: Optional[np.ndarray] = None,
            min_cycle_s: float = 0.4, smooth_s: float = 0.04, frames: Optional[np.ndarray] = None,
            predicted: bool = False) -> CardiacResult:
    """Full LV analysis of a (T, H, W) label map: curves, ED/ES per beat and EF (see module doc).

    ``spacing`` is (row_mm, col_mm); ``times_s`` (T,) frame times (default 30 fps). ``frames`` (the
    cine's (T, H, W) pixels, when known) and the labels (``predicted``: a model's output) are checked by
    `implausible_lv` first: without a
    plausible LV the status is "no plausible LV" and no EF, EDV or ESV is reported.
    """
    labels = _check_labels(labels)
    T = labels.shape[0]
    times = np.arange(T) / 30.0 if times_s is None else np.asarray(times_s, dtype=float)
    if times.shape != (T,):
        raise EchoSAMError(f"{len(times)} frame times for {T} label frames; give one time per frame.")
    c = volume_curves(labels, spacing)
    res = CardiacResult(times_s=times, area_mm2=c["area_mm2"], length_mm=c["length_mm"],
                        volume_al_ml=c["volume_al_ml"], volume_disks_ml=c["volume_disks_ml"])
    v = res.volume_al_ml
    if not np.any(v > 0):
        res.message = "No LV cavity (label 1) in any frame; EF cannot be computed."
        return res
    why = implausible_lv(frames, labels, predicted)
    if why:
        res.status = "no plausible LV"
        res.message = f"No plausible LV: {why}; no EF is reported. Check the cine (and the model or prompts)."
        return res
    if T < 2 or float(times[-1] - times[0]) < min_cycle_s / 4:
        # one frame (or a few ms) holds no contraction: a volume, but no ED/ES and no EF
        res.status = "too short"
        res.edv_ml = float(v.max())
        res.message = (f"{T} frame(s) over {float(times[-1] - times[0]):.2f} s: too short for ED/ES and EF; "
                       "record at least one cardiac cycle.")
        return res
    res.glitch_frames = one_frame_glitches(v)
    ed, es = detect_ed_es(v, times, min_cycle_s, smooth_s)
    if set(res.glitch_frames) & set(ed + es):    # a glitch would be an EDV or ESV: read it from its neighbours
        v = v.copy()
        raw = res.volume_al_ml
        for t in res.glitch_frames:
            v[t] = 0.5 * (raw[t - 1] + raw[t + 1])
        ed, es = detect_ed_es(v, times, min_cycle_s, smooth_s)
    res.ed_frames, res.es_frames = ed, es
    for n, e in enumerate(ed):
        nxt = ed[n + 1] if n + 1 < len(ed) else T
        cands = [s for s in es if e < s < nxt]
        if not cands:
            continue
        s = min(cands, key=lambda i: v[i])
        edv, esv = float(v[e]), float(v[s])
        if edv <= 0 or (predicted and float(times[s] - times[e]) > MAX_SYSTOLE_S):
            continue
        res.beats.append(Beat(int(e), int(s), float(times[e]), float(times[s]), edv, esv,
                              100.0 * (edv - esv) / edv, n + 1 < len(ed)))
    if res.beats:
        res.status = "cycles"
        res.ef_percent = float(np.mean([b.ef_percent for b in res.beats]))
        res.edv_ml = float(np.mean([b.edv_ml for b in res.beats]))
        res.esv_ml = float(np.mean([b.esv_ml for b in res.beats]))
        full = sum(b.complete_cycle for b in res.beats)
        res.message = f"{len(res.beats)} ED->ES beat(s) ({full} closed by a next ED); EF is their mean."
    elif predicted and float(times[-1] - times[0]) > PARTIAL_CYCLE_MAX_S:
        res.status = "no cardiac cycle"
        res.message = (f"The segmented LV shows no ED->ES beat over {float(times[-1] - times[0]):.1f} s, which a "
                       f"beating heart always shows within {PARTIAL_CYCLE_MAX_S:.0f} s: the segmentation probably "
                       "drifted; no EF is reported. Check the labels (correct a late frame and propagate again).")
        return _add_notes(res)
    else:
        e, s = int(np.argmax(v)), int(np.argmin(np.where(v > 0, v, np.inf)))
        res.status = "single partial cycle"
        res.edv_ml, res.esv_ml = float(v[e]), float(v[s])
        res.ef_percent = 100.0 * (res.edv_ml - res.esv_ml) / res.edv_ml
        res.ed_frames, res.es_frames = [e], [s]
        res.message = ("No full ED->ES beat found; EF from the global maximum and minimum volume "
                       "(single partial cycle): record a full cardiac cycle for a reliable EF.")
    lo, hi = EF_PHYSIOLOGICAL
    if predicted and np.isfinite(res.ef_percent) and not lo <= res.ef_percent <= hi:
        # a model's LV that shrinks to a sliver (or never contracts) gives a number no heart has
        res.message = (f"The segmented LV gives an EF of {res.ef_percent:.1f} %, outside the physiological "
                       f"{lo:.0f}-{hi:.0f} %: the segmentation is probably wrong; no EF is reported. "
                       "Check the labels (and the model or prompts).")
        res.status = "implausible EF"
        res.ef_percent = res.edv_ml = res.esv_ml = float("nan")
        res.beats = []                                   # no per-beat numbers either
    return _add_notes(res)


def _add_notes(res: CardiacResult) -> CardiacResult:
    """Append what the user should know about the curve: too few frames of systole, one-frame glitches."""
    pairs = [(b.ed_frame, b.es_frame) for b in res.beats] or list(zip(res.ed_frames, res.es_frames))
    if np.isfinite(res.ef_percent):                    # only where an EF is shown
        res.message += sparse_systole_note(pairs)
    if res.glitch_frames:
        frames = ", ".join(map(str, res.glitch_frames))
        res.message += (f" The LV volume jumps on frame(s) {frames} alone (a one-frame segmentation glitch; never "
                        "taken as the EDV or ESV): check and correct those frames.")
    return res
