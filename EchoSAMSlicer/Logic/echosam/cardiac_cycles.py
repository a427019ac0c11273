"""ED and ES frames from an LV volume curve (`detect_ed_es`), and the one-frame glitches of a model's
curve that must not become an EDV or ESV (`one_frame_glitches`). `echosam.cardiac` measures the curve and
turns these frames into beats and an EF; its docstring states the ED/ES rule.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

# a frame whose volume jumps away from both neighbours by more than this share of the curve's range is a
# one-frame segmentation glitch: a smooth curve's extreme at 7.5 frames a beat (15 fps, 120 bpm) sits 0.17
# of the range from its neighbours' mean
GLITCH_FRACTION = 0.3


def detect_ed_es(volume: np.ndarray, times_s: np.ndarray, min_cycle_s: float = 0.4,
                 smooth_s: float = 0.04) -> tuple:
    """ED and ES frame indices (lists) from a (T,) volume curve and (T,) frame times in s."""
    v = np.asarray(volume, dtype=float)
    T = len(v)
    if T < 3 or not np.any(v > 0):
        return [], []
    dt = float(np.median(np.diff(times_s))) if T > 1 else 1.0
    sm = ndimage.gaussian_filter1d(v, sigma=max(smooth_s / dt, 1e-3), mode="nearest") if smooth_s > 0 else v
    rng = float(np.ptp(sm))
    if rng <= 1e-9 * max(1.0, float(np.max(np.abs(sm)))):
        return [], []
    dist = max(1, int(round(min_cycle_s / dt)))
    prom = 0.1 * rng
    ed = list(signal.find_peaks(sm, distance=dist, prominence=prom)[0])
    es = list(signal.find_peaks(-sm, distance=dist, prominence=prom)[0])
    tol = 0.1 * rng
    half = max(1, dist // 2)
    step = np.abs(np.diff(v))
    end_slope = lambda i: step[0] if i < T / 2 else step[-1]      # noqa: E731 (the slope at i's end of the loop)
    max_slope = float(step.max())

    def endpoint_ok(i: int, interior: list, sign: float) -> bool:
        win = sm[max(0, i - half): i + half + 1]
        if sign * sm[i] < np.max(sign * win) - 1e-12:
            return False           # not the extreme of its neighbourhood
        if any(abs(i - j) < dist for j in interior):
            return False
        if not interior and end_slope(i) > 0.5 * max_slope:
            # nothing to compare with and still moving steeply: the loop starts/ends mid-systole or
            # diastole. With interior ED/ES the level test below decides (an ED at frame 0 is steep
            # too: the volume falls right after it).
            return False
        ref = np.median(sm[interior]) if interior else (sm.max() if sign > 0 else sm.min())
        return sign * (sm[i] - ref) >= -tol

    # An extreme a few frames from either end has no base on its outer side, so find_peaks gives it no
    # prominence (a loop ending 3 frames after ED lost that ED): each end's candidate is the extreme of the
    # edge window (half a minimum cycle), then checked as an endpoint.
    edges = (np.arange(0, min(half, T)), np.arange(max(T - half, 0), T))
    for sign, found in ((1.0, ed), (-1.0, es)):
        for window in edges:
            i = int(window[np.argmax(sign * sm[window])])
            if i not in found and endpoint_ok(i, found, sign):
                found.append(i)
    return sorted(set(int(i) for i in ed)), sorted(set(int(i) for i in es))


def one_frame_glitches(volume: np.ndarray) -> list:
    """Frames whose volume jumps away from both neighbours, the same way, by more than ``GLITCH_FRACTION``
    of the curve's range (taken on its 3-frame running median, which a glitch does not widen), while the two
    neighbours agree within half that jump: a heart moves over several frames, a model's mask can fail on
    one (a validation loop's LV read 181, 131, 180 ml by disks around ED, and its ED fell on the middle
    frame: EF 10 points off). Ends and empty frames are left alone."""
    v = np.asarray(volume, dtype=float)
    if len(v) < 5:
        return []
    rng = float(np.ptp(ndimage.median_filter(v, size=3, mode="nearest")))
    out = []
    for t in range(1, len(v) - 1):
        a, b, x = v[t - 1], v[t + 1], v[t]
        jump = x - 0.5 * (a + b)
        alone = (x - a) * (x - b) > 0 and abs(a - b) < 0.5 * abs(jump)      # both neighbours on one side
        if min(a, b, x) > 0 and alone and abs(jump) > GLITCH_FRACTION * rng:
            out.append(t)
    return out


# ED -> ES in fewer frames than this: the true ED and ES fall between frames, and the heart moves far between
# frames. Bundled MemSAM on simulated loops, EF bias by ED -> ES frames: -14 points at 4 (7 loops), -6.0 at 5
# (28), -3.9 at 6 (10), -0.6 to -6.7 from 7 to 17; the same 6 phantom loops at 12 and 30 frames a beat (4 and 10
# frames of systole): EF error 12.2 and 5.5 points (docs/evaluation.md "Two foreign phantoms"). With in-between
# frames (session.in_between) MemSAM's bias is -6.4 at 4 and -3.4 at 5; prompt-free models take none.
SPARSE_SYSTOLE_FRAMES = 6


def sparse_systole_note(pairs: list) -> str:
    """A sentence for the user when the fastest (ED, ES) frame pair spans fewer than SPARSE_SYSTOLE_FRAMES
    frames; "" otherwise."""
    spans = [(int(s) - int(e), int(e), int(s)) for e, s in pairs if int(s) > int(e)]
    if not spans:
        return ""
    n, e, s = min(spans)
    if n >= SPARSE_SYSTOLE_FRAMES:
        return ""
    return (f" Systole spans only {n} frame intervals (ED frame {e} -> ES frame {s}): at so low a frame rate the "
            "true ED and ES fall between frames and the heart moves far between frames, so this EF tends to read "
            f"low. Record at least {SPARSE_SYSTOLE_FRAMES} frames from ED to ES (about 25 frames/s or more) for an EF.")
