"""Cardiac timing: the normalised LV volume curve over a loop, and its ED/ES frames.

One cycle of period ``Tc = 60 / HR`` seconds starts at end-diastole (ED) and runs through
isovolumic contraction (0.05 s), ejection (fast early, slower late), isovolumic relaxation
(0.07 s), rapid filling (E wave), diastasis and the atrial kick (A wave) back to ED. Systole
shortens with heart rate (``Ts = 0.33 sqrt(Tc)``, Bazett-like); at high rates diastasis vanishes
and E and A merge. Values are the LV volume as a fraction of EDV: 1 at ED, ``1 - EF`` at ES.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IVC_S, IVR_S = 0.05, 0.07


def _smooth_step(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def cycle_volume(phase_s: np.ndarray, period_s: float, ef: float, e_share: float = 0.75) -> np.ndarray:
    """Normalised LV volume at times ``phase_s`` (seconds since ED, within one cycle of ``period_s``).
    ``ef`` is a fraction (0.55 = 55 %); ``e_share`` the part of the stroke volume refilled by the E wave
    plus diastasis (the rest by the atrial kick)."""
    t = np.asarray(phase_s, dtype=np.float64) % period_s
    ts = 0.33 * np.sqrt(period_s)                  # ED -> ES (includes isovolumic contraction)
    dia = period_s - ts - IVR_S                    # filling time
    e_dur = min(0.18, 0.45 * dia)
    a_dur = min(0.13, 0.30 * dia)
    es_v = 1.0 - ef
    v = np.ones_like(t)
    ej = (t >= IVC_S) & (t < ts)
    x = (t[ej] - IVC_S) / (ts - IVC_S)
    v[ej] = 1.0 - ef * _ej_shape(x)
    v[(t >= ts) & (t < ts + IVR_S)] = es_v
    f0 = ts + IVR_S
    fill = t >= f0
    tf = t[fill] - f0
    e_part = e_share * 0.85 * _smooth_step(tf / e_dur)
    dias = e_share * 0.15 * np.clip((tf - e_dur) / max(dia - e_dur - a_dur, 1e-3), 0.0, 1.0)
    a_start = dia - a_dur
    a_part = (1.0 - e_share) * _smooth_step((tf - a_start) / a_dur)
    v[fill] = es_v + ef * np.minimum(e_part + dias + a_part, 1.0)
    return v


def _ej_shape(x: np.ndarray) -> np.ndarray:
    """Fraction of the stroke volume ejected at normalised ejection time ``x`` (fast early)."""
    return _smooth_step(x) ** 0.7


@dataclass
class Timing:
    times_s: np.ndarray        # (T,) frame times, s
    volume: np.ndarray         # (T,) LV volume / EDV
    systole: np.ndarray        # (T,) bool: mitral valve closed (ED .. end of isovolumic relaxation)
    ed_frames: list
    es_frames: list
    period_s: float


def loop_timing(n_frames: int, fps: float, heart_rate: float, ef: float, start_phase: float = 0.0,
                beat_jitter: float = 0.0, rng: np.random.Generator | None = None) -> Timing:
    """Volume curve for ``n_frames`` at ``fps``; ``start_phase`` in cycles (0 = starts at ED).
    ``beat_jitter`` varies each beat's period and EF by that relative amount (sinus arrhythmia)."""
    rng = rng or np.random.default_rng(0)
    period = 60.0 / heart_rate
    times = np.arange(n_frames) / fps
    t_abs = times + start_phase * period
    # beat boundaries with jittered periods
    n_beats = int(np.ceil(t_abs[-1] / (period * (1 - beat_jitter)))) + 2
    periods = period * (1.0 + beat_jitter * rng.uniform(-1, 1, n_beats))
    efs = np.clip(ef * (1.0 + 0.5 * beat_jitter * rng.uniform(-1, 1, n_beats)), 0.05, 0.9)
    starts = np.concatenate([[0.0], np.cumsum(periods)])
    beat = np.searchsorted(starts, t_abs, side="right") - 1
    phase = t_abs - starts[beat]
    vol = np.empty(n_frames)
    systole = np.empty(n_frames, dtype=bool)
    ed_t, es_t = [], []
    for b in np.unique(beat):
        sel = beat == b
        vol[sel] = cycle_volume(phase[sel], periods[b], efs[b])
        ts = 0.33 * np.sqrt(periods[b])
        systole[sel] = phase[sel] < ts + IVR_S
        ed_t.append(starts[b])
        es_t.append(starts[b] + ts)
    ed_t.append(starts[beat.max() + 1])
    ed_frames = sorted({int(round((t - start_phase * period) * fps)) for t in ed_t
                        if -0.5 <= (t - start_phase * period) * fps <= n_frames - 0.5})
    es_frames = sorted({int(round((t - start_phase * period) * fps)) for t in es_t
                        if -0.5 <= (t - start_phase * period) * fps <= n_frames - 0.5})
    return Timing(times, vol, systole, ed_frames, es_frames, period)
