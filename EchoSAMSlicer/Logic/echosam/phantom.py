"""Synthetic apical-four-chamber-like echo cines with exact ground truth (demo, self-test, tests).

Image model (per frame, pixel units, rows down from the transducer):
- a fan (sector) with its tip at the top centre; black outside the fan;
- a left ventricle whose cavity is a *truncated ellipse*: apex near the sector tip, long axis
  pointing away from the tip (tilted a few degrees to the right), cut at the mitral plane at
  0.8 semi-axes past the centre (cavity length L = 1.8 a). The myocardium is the ring between
  the cavity and a wider ellipse (semi-axes a + w, b + w) on the same side of the mitral plane;
  it thickens in systole. The left atrium is an ellipse just beyond the mitral plane. A right
  ventricle and right atrium (dark, *not* labelled) sit to the left, as in A4C views;
- echogenicity: bright myocardium, mid-grey tissue, dark blood; multiplicative speckle with a
  Rayleigh amplitude (magnitude of a smoothed complex Gaussian field), depth attenuation, gain.

Beating: with cycle position phi in [0, 1) (0 = end-diastole, ES at ``SYSTOLE = 0.35``), the
contraction is c = (1 - cos(pi phi / 0.35)) / 2 in systole and (1 + cos(pi (phi - 0.35) / 0.65)) / 2
in diastole (smooth, zero slope at ED and ES). The volume ratio v = 1 - (ef / 100) c drives the
long axis by v**0.2 and the short axes by v**0.4, so that the area-length volume
``V = 8 A^2 / (3 pi L)`` (A cavity area, L its length) follows v; the apex stays fixed and the
base moves, as in real hearts. The *realised* EF (from the pixel masks) is reported in
``true_ef``; it differs from ``ef`` by pixelisation only.

Per-seed variation (``np.random.default_rng(seed)``): fan angle and position, LV tilt and
position, chamber sizes, wall thickness, tissue/myocardium brightness, attenuation and gain.
Same seed -> identical cine and labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from .cine import Cine
from .errors import CineError

SYSTOLE = 0.35          # ES position in the cycle (fraction of the RR interval)
GAP_FRAC = 0.012        # mitral-plane gap between LV base and LA, fraction of the height
DEPTH_MM = 150.0        # default imaging depth: the image height maps to 150 mm


def area_length_volume_ml(area_mm2, length_mm):
    """Single-plane area-length LV volume in ml: ``V = 8 A^2 / (3 pi L)`` with A in mm^2, L in mm
    (1 ml = 1000 mm^3). Works on scalars or arrays; L <= 0 gives 0."""
    a = np.asarray(area_mm2, dtype=float)
    length = np.asarray(length_mm, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(length > 0, 8.0 * a ** 2 / (3.0 * np.pi * length), 0.0) / 1000.0
    return v


def contraction(phase: np.ndarray) -> np.ndarray:
    """Contraction c in [0, 1] at cycle positions ``phase`` (any real; only the fraction matters)."""
    p = np.mod(np.asarray(phase, dtype=float), 1.0)
    sys = 0.5 * (1.0 - np.cos(np.pi * p / SYSTOLE))
    dia = 0.5 * (1.0 + np.cos(np.pi * (p - SYSTOLE) / (1.0 - SYSTOLE)))
    return np.where(p < SYSTOLE, sys, dia)


@dataclass
class Phantom:
    """A synthetic cine with exact labels (0 background, 1 LV cavity, 2 myocardium, 3 LA).

    ``lv_area_mm2``, ``lv_length_mm`` and ``lv_volume_ml`` are (T,) per frame; the volume is the
    area-length formula on the pixel-exact cavity area and the cavity's long-axis length (apex to
    mitral-plane centre). ``ed_frames``/``es_frames``: one frame per beat whose ED/ES instant
    falls inside the cine (largest/smallest volume around that instant). ``true_ef`` =
    100 (mean ED volume - mean ES volume) / mean ED volume, or from the curve's max and min
    when the cine does not contain both an ED and an ES instant.
    """

    cine: Cine
    labels: np.ndarray
    ed_frames: list
    es_frames: list
    true_ef: float
    lv_area_mm2: np.ndarray
    lv_length_mm: np.ndarray
    lv_volume_ml: np.ndarray
    params: dict = field(default_factory=dict)


def _ellipse(s, u, cs, cu, ra, rb):
    return ((s - cs) / ra) ** 2 + ((u - cu) / rb) ** 2 <= 1.0


def _blur(x: np.ndarray, col_passes: int = 1) -> np.ndarray:
    """Cheap Gaussian-like blur of (T, H, W) in the frame plane: one [1, 2, 1]/4 pass along rows
    and ``col_passes`` along columns (sigma about 0.7 px per pass; edges replicated)."""
    y = x.astype(np.float32, copy=True)
    for axis, passes in ((1, 1), (2, col_passes)):
        for _ in range(passes):
            p = np.concatenate([np.take(y, [0], axis), y, np.take(y, [-1], axis)], axis=axis)
            lo = [slice(None)] * 3
            mid = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], mid[axis], hi[axis] = slice(0, -2), slice(1, -1), slice(2, None)
            y = 0.25 * (p[tuple(lo)] + p[tuple(hi)]) + 0.5 * p[tuple(mid)]
    return y


def _check(n_frames, ef, heart_rate, fps, size, noise) -> tuple:
    if int(n_frames) < 1:
        raise CineError(f"A phantom needs at least 1 frame, got {n_frames}.")
    if not 5.0 <= float(ef) <= 85.0:
        raise CineError(f"Ejection fraction {ef}% is outside the 5..85% a phantom can show.")
    if not 20.0 <= float(heart_rate) <= 250.0:
        raise CineError(f"Heart rate {heart_rate} bpm is outside 20..250 bpm.")
    if not (np.isfinite(fps) and fps > 0):
        raise CineError(f"Frame rate must be positive, got {fps}.")
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if h < 32 or w < 32:
        raise CineError(f"Phantom size {h}x{w} is too small; use at least 32x32 pixels.")
    if not 0.0 <= float(noise) <= 1.0:
        raise CineError(f"Speckle noise must be in 0..1, got {noise}.")
    return h, w


def make_phantom(n_frames: int = 40, ef: float = 55.0, heart_rate: float = 72.0, fps: float = 30.0,
                 size: int | Sequence[int] = (256, 256), spacing_mm: Optional[Sequence[float]] = None,
                 seed: int = 0, noise: float = 0.6, start_phase: float = 0.0, name: str = "phantom") -> Phantom:
    """Make a synthetic A4C-like cine (see the module docstring).

    ``n_frames`` frames of ``size`` (H, W) pixels at ``fps`` Hz; ``ef`` requested ejection
    fraction (%); ``heart_rate`` in bpm; ``spacing_mm`` (row, col) pixel spacing, default
    ``150 mm / H`` both ways; ``noise`` speckle strength 0 (clean) .. 1; ``start_phase`` the
    cycle position of frame 0 (0 = ED). Frames are uint8 (T, H, W).
    """
    h, w = _check(n_frames, ef, heart_rate, fps, size, noise)
    n = int(n_frames)
    row_mm, col_mm = (DEPTH_MM / h, DEPTH_MM / h) if spacing_mm is None else map(float, spacing_mm)
    rng = np.random.default_rng(seed)
    u01 = rng.uniform
    tip = np.array([0.03 * h, w / 2 + u01(-0.02, 0.02) * w])
    half_angle = np.deg2rad(u01(42.0, 48.0))
    radius = 0.93 * h
    tilt = np.deg2rad(u01(2.0, 9.0))
    e = np.array([np.cos(tilt), np.sin(tilt)])            # long axis (row, col), towards the base
    nrm = np.array([-np.sin(tilt), np.cos(tilt)])         # short axis, towards the image right
    apex = tip + 0.15 * h * u01(0.9, 1.1) * e + 0.01 * h * nrm
    g = u01(0.9, 1.1)
    shape_b, shape_w, shape_la = u01(0.92, 1.08), u01(0.85, 1.15), u01(0.9, 1.1)
    tissue, myo_level = u01(0.30, 0.45), u01(0.75, 0.95)
    alpha, gain = u01(0.4, 0.9), u01(0.85, 1.1)

    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    s = (rows - apex[0]) * e[0] + (cols - apex[1]) * e[1]
    u = (rows - apex[0]) * nrm[0] + (cols - apex[1]) * nrm[1]
    depth = np.hypot(rows - tip[0], cols - tip[1])
    angle = np.arctan2(cols - tip[1], rows - tip[0])
    sector = (depth <= radius) & (np.abs(angle) <= half_angle) & (rows >= tip[0])
    inner = (depth <= radius - 3) & (np.abs(angle) <= half_angle - np.deg2rad(2.0))
    for _ in range(20):       # shrink until the end-diastolic LV and LA lie inside the fan
        a0, b0, w0 = 0.27 * h * g, 0.13 * h * g * shape_b, 0.035 * h * g * shape_w
        la_a0, la_b0 = 0.085 * h * g, 0.095 * h * g * shape_la
        base0 = 1.8 * a0
        ed_heart = (_ellipse(s, u, a0, 0.0, a0 + w0, b0 + w0) & (s <= base0)) | \
            _ellipse(s, u, base0 + GAP_FRAC * h + la_a0, 0.0, 1.25 * la_a0, 1.15 * la_b0)
        if not (ed_heart & ~inner).any():
            break
        g *= 0.95
    params_fit = round(float(g), 4)
    rv_b0 = 0.075 * h * g

    times = np.arange(n) / float(fps)
    cycles = float(start_phase) + times * float(heart_rate) / 60.0
    c = contraction(cycles)
    v = 1.0 - (float(ef) / 100.0) * c
    labels = np.zeros((n, h, w), np.uint8)
    tissue_class = np.zeros((n, h, w), np.uint8)       # 0 tissue, 1 blood (RV/RA), 2 outside the fan
    length_px = np.empty(n)
    gap = GAP_FRAC * h
    for t in range(n):
        a, b, wall = a0 * v[t] ** 0.2, b0 * v[t] ** 0.4, w0 * (1.0 + 0.5 * c[t])
        base = 1.8 * a
        length_px[t] = base
        below = s <= base
        cavity = _ellipse(s, u, a, 0.0, a, b) & below
        outer = _ellipse(s, u, a, 0.0, a + wall, b + wall) & below
        la_a, la_b = la_a0 * (1 + 0.25 * c[t]), la_b0 * (1 + 0.15 * c[t])
        la = _ellipse(s, u, base + gap + la_a, 0.0, la_a, la_b) & (s >= base + gap)
        rv_u = -(b0 + w0 + 0.015 * h + rv_b0)
        rv = _ellipse(s, u, 0.95 * a, rv_u, 0.85 * a, rv_b0 * (1.0 - 0.25 * c[t] * ef / 100.0)) & below
        ra = _ellipse(s, u, base + gap + la_a0, 0.9 * rv_u, la_a0 * (1 + 0.2 * c[t]), 0.9 * la_b0) & (s >= base + gap)
        labels[t] = np.where(cavity, 1, np.where(outer, 2, np.where(la, 3, 0))) * sector
        tissue_class[t] = np.where(sector, rv | ra, 2)
    levels = np.array([[tissue, 0.06, 0.0], [0.05, 0.05, 0.0], [myo_level, myo_level, 0.0],
                       [0.05, 0.05, 0.0]], np.float32)
    echo = _blur(levels[labels, tissue_class])
    if noise > 0:
        speckle = np.hypot(_blur(rng.standard_normal((n, h, w), dtype=np.float32), 2),
                           _blur(rng.standard_normal((n, h, w), dtype=np.float32), 2))
        speckle *= 1.0 / speckle.mean()
        echo *= (1.0 - noise) + noise * speckle
        echo += 0.02 * noise * rng.standard_normal((n, h, w), dtype=np.float32)
    echo *= (gain * 255.0 * np.exp(-alpha * depth / radius) * sector)[None]
    frames = np.clip(np.rint(echo), 0, 255).astype(np.uint8)

    cine = Cine.from_array(frames, spacing=(row_mm, col_mm), frame_times=times, name=name,
                           metadata={"phantom": {"seed": seed, "ef": ef, "heart_rate": heart_rate}})
    area = (labels == 1).reshape(n, -1).sum(axis=1) * cine.pixel_area_mm2
    length_mm = length_px * float(np.hypot(e[0] * row_mm, e[1] * col_mm))
    volume = area_length_volume_ml(area, length_mm)
    ed, es = _phase_frames(cycles, volume)
    if ed and es:
        edv, esv = float(np.mean(volume[ed])), float(np.mean(volume[es]))
    else:
        edv, esv = float(volume.max()), float(volume.min())
    true_ef = 100.0 * (edv - esv) / edv if edv > 0 else 0.0
    params = {"seed": seed, "ef": float(ef), "heart_rate": float(heart_rate), "fps": float(fps),
              "tilt_deg": float(np.rad2deg(tilt)), "apex_rc": apex.tolist(), "sector_tip_rc": tip.tolist(),
              "sector_half_angle_deg": float(np.rad2deg(half_angle)), "noise": float(noise),
              "size_scale": params_fit}
    return Phantom(cine, labels, ed, es, float(true_ef), area, length_mm, volume, params)


def _phase_frames(cycles: np.ndarray, volume: np.ndarray) -> tuple[list, list]:
    """ED/ES frames: for each ED instant (integer cycle) and ES instant (integer + SYSTOLE) inside
    the sampled span (half a frame of tolerance), the frame of max/min volume within half a phase
    interval around it."""
    n = cycles.size
    half = 0.5 * (cycles[1] - cycles[0]) if n > 1 else 0.0
    lo, hi = cycles[0] - half, cycles[-1] + half
    ed, es = [], []
    for k in range(int(np.floor(lo)) - 1, int(np.ceil(hi)) + 1):
        for instant, before, after, out, pick in ((k, (1 - SYSTOLE) / 2, SYSTOLE / 2, ed, np.argmax),
                                                  (k + SYSTOLE, SYSTOLE / 2, (1 - SYSTOLE) / 2, es, np.argmin)):
            if not lo <= instant <= hi:
                continue
            idx = np.flatnonzero((cycles >= instant - before) & (cycles < instant + after))
            if idx.size:
                out.append(int(idx[pick(volume[idx])]))
    return sorted(ed), sorted(es)
