"""Foreign phantom: apical four-chamber cines from an anatomy, motion and imaging chain written apart from
training/simulator, to check that models trained on that simulator generalise to what they never saw.

Geometry lives in a frame tied to the LV: B is the centre of the mitral annulus, `up` points to the apex,
`v` to the lateral wall (image right). LV cavity and LV cavity+myocardium are star-shaped about B, so each
is one radius per angle; the LA is an ellipse cut by the annulus line, also a radius per angle below B.
Tissue moves by rescaling each point's radius inside these shapes (area-preserving in the myocardium),
and outside them by its boundary point's displacement fading with distance. Labels are the same shapes
rasterised on the output grid. Images: pymust SIMUS (P4-2v, diverging wave), DAS on a polar grid.

    python bench/foreign_phantom.py --out data/foreign --seeds 7700000:7700012 --frames 12 --workers 2
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")   # spawned workers re-import this first: one BLAS thread each

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from training.simulator.cache import case_path, map_seeds, parse_seeds, save_case

GENERATOR = "foreign-phantom-1"
PHI = np.linspace(0.0, np.pi / 2, 1001)   # |angle| from the apex direction, over the LV side of the annulus
DECAY_MM = 18.0                           # how far wall motion reaches into the surrounding tissue
N_TISSUE = 10000


def draw(seed: int) -> tuple:
    """Every random choice of a case, from its seed alone."""
    rng = np.random.default_rng(seed)
    u = rng.uniform
    p = dict(seed=int(seed), view="a4c", generator=GENERATOR, ef_target=u(0.25, 0.70), heart_rate=u(55, 110),
             beats=u(1.2, 2.0), depth_mm=u(140, 170), sector_deg=u(70, 85), height=int(rng.integers(220, 261)),
             dyn_range_db=u(50, 60), headroom_db=u(12, 18), gamma=u(1.1, 1.4), lv_length_mm=u(70, 95),
             lv_width_mm=u(38, 52), apex_frac=u(0.45, 0.6),
             annulus_frac=u(0.58, 0.72), septal_frac=u(0.88, 1.0), tilt_deg=u(-15, 15), axis_x_mm=u(6, 16),
             wall_mm=u(7, 12), base_wall_gain=u(1.0, 1.3), la_long_mm=u(40, 55), la_short_mm=u(30, 45),
             la_growth=u(0.10, 0.18), rv_width_mm=u(16, 26), ra_long_mm=u(34, 46), ra_short_mm=u(28, 38),
             blood_db=u(30, 40), dropout=bool(rng.random() < 0.4), n_clutter=int(rng.integers(4, 12)),
             ivrt_s=u(0.06, 0.10))
    period = 60.0 / p["heart_rate"]
    span = p["beats"] * period
    fps = u(max(25.0, 30.0 / span), min(50.0, 60.0 / span))     # 30-60 loop frames over 1.2-2 beats
    n_loop = int(np.clip(round(span * fps), 30, 60))
    # the first ED comes early enough that the next one is still inside the loop
    p.update(fps_loop=fps, n_loop=n_loop, systole_s=0.14 + 0.25 * period,
             ed_offset_s=u(0.0, max(0.0, (n_loop - 1) / fps - period - 0.5 / fps)))
    # apex as deep as usual, but shallower when that keeps the LA inside the fan
    reach = (p["lv_length_mm"] + 0.95 * p["la_long_mm"]) * np.cos(np.deg2rad(p["tilt_deg"]))
    p["apex_z_mm"] = float(max(20.0, min(u(26, 40), p["depth_mm"] - 8 - reach)))
    return p, rng


def lv_fill(phase: np.ndarray, ts: float, ti: float) -> np.ndarray:
    """1 at ED, 0 at ES: fast ejection, isovolumic relaxation (ti), rapid filling, diastasis, atrial kick."""
    sm = lambda x: (lambda c: c * c * (3 - 2 * c))(np.clip(x, 0.0, 1.0))
    s = np.clip(phase / ts, 0.0, 1.0)
    d = np.clip((phase - ts - ti) / (1.0 - ts - ti), 0.0, 1.0)
    dia = 0.72 * sm(d / 0.3) + 0.10 * np.clip((d - 0.3) / 0.45, 0, 1) + 0.18 * sm((d - 0.75) / 0.25)
    return np.where(phase < ts, 0.5 * (1 + np.cos(np.pi * s ** 0.8)), dia)


def bullet(length: float, half: float, apex_frac: float, base_half: float) -> np.ndarray:
    """Radius from B (base centre) over PHI of a half-ellipse apex joined to a flatter, narrowing base."""
    u = length * 0.5 * (1 - np.cos(np.linspace(0, np.pi, 800)))     # dense near apex and base
    a = apex_frac * length
    m = min(base_half / half, 0.85)           # the base never flares wider than the mid-cavity
    w = np.where(u <= a, half * np.sqrt(np.clip(1 - ((a - u) / a) ** 2, 0, None)),
                 half * (1 - (1 - m) * ((u - a) / (length - a)) ** 2))
    phi = np.maximum.accumulate(np.arctan2(w, length - u))
    return np.interp(PHI, phi, np.hypot(w, length - u))


def geometry(p: dict, f: float) -> dict:
    """LV and LA shapes at fill state f (1 = ED)."""
    ef = p["ef_target"]
    s_len = (1 - ef) ** 0.15                  # ~10-15 % long-axis shortening, the rest from narrowing
    s_wid = np.sqrt((1 - ef) / s_len)         # volume ~ width^2 * length, so this gives the drawn EF
    L0, W0 = p["lv_length_mm"], p["lv_width_mm"]
    L = L0 * (s_len + (1 - s_len) * f)
    W = W0 * (s_wid + (1 - s_wid) * f)
    ann = W0 * p["annulus_frac"] * (1 - 0.4 * (1 - s_wid) * (1 - f))
    t = np.deg2rad(p["tilt_deg"])
    eu, ev = np.array([np.sin(t), np.cos(t)]), np.array([np.cos(t), -np.sin(t)])   # world (x, z)
    apex0 = np.array([p["axis_x_mm"] - 0.5 * L0 * np.sin(t), p["apex_z_mm"]])
    B = apex0 + (0.12 * (L0 - L) + L) * eu    # apex descends a little, the base rises a lot
    g = 1 + p["la_growth"] * (1 - f)          # LA fills while the LV empties
    aL, bL = 0.5 * p["la_long_mm"] * g, max(0.5 * p["la_short_mm"] * g, 1.15 * ann / 2)
    return dict(B=B, eu=eu, ev=ev, L=L, W=W, ann=ann, aL=aL, bL=bL, c=aL * np.sqrt(1 - (ann / 2 / bL) ** 2),
                rc=(bullet(L, p["septal_frac"] * W / 2, p["apex_frac"], ann / 2),   # septal (left) side
                    bullet(L, W / 2, p["apex_frac"], ann / 2)))                     # lateral (right) side


def myo_k(p: dict, g0: dict) -> tuple:
    """Outer^2 - inner^2 radius per angle at ED: kept constant so the wall's area is conserved."""
    t, tb, ta = p["wall_mm"], p["wall_mm"] * p["base_wall_gain"], 0.85 * p["wall_mm"]
    L, a = g0["L"], p["apex_frac"] * g0["L"]
    out = [bullet(L + ta, h + t, (a + ta) / (L + ta), g0["ann"] / 2 + tb)
           for h in (p["septal_frac"] * g0["W"] / 2, g0["W"] / 2)]
    return tuple(o ** 2 - r ** 2 for o, r in zip(out, g0["rc"]))


def fit_in_fan(p: dict) -> None:
    """Slide the heart sideways until the ED cavity and the inner half of its wall lie inside the fan."""
    lim = np.deg2rad(p["sector_deg"]) / 2 - np.deg2rad(1.0)
    for _ in range(60):
        g0 = geometry(p, 1.0)
        ph = np.concatenate([-PHI, PHI])
        rc, ro, _ = radii(ph, g0, myo_k(p, g0))
        ro = 0.5 * (rc + ro)
        P = g0["B"] + ro[:, None] * (np.cos(ph)[:, None] * -g0["eu"] + np.sin(ph)[:, None] * g0["ev"])
        th = np.arctan2(P[:, 0], P[:, 1])
        if max(th.max(), -th.min()) <= lim or (th.max() > lim and -th.min() > lim):
            return
        p["axis_x_mm"] += -1.0 if th.max() > lim else 1.0


def polar(P: np.ndarray, g: dict) -> tuple:
    d = P - g["B"]
    return np.hypot(d @ g["eu"], d @ g["ev"]), np.arctan2(d @ g["ev"], -(d @ g["eu"]))


def radii(phi: np.ndarray, g: dict, K: tuple) -> tuple:
    """(cavity, outer wall) radii on the LV side, LA radius on the atrial side, for angles phi."""
    a = np.clip(np.abs(phi), 0, np.pi / 2)
    side = phi >= 0
    rc = np.where(side, np.interp(a, PHI, g["rc"][1]), np.interp(a, PHI, g["rc"][0]))
    ro = np.sqrt(rc ** 2 + np.where(side, np.interp(a, PHI, K[1]), np.interp(a, PHI, K[0])))
    # ray from B (on the cut chord) to the LA ellipse: solve A r^2 + b r + c = 0 for its positive root
    cs, sn = np.cos(phi), np.sin(phi)
    A = cs ** 2 / g["aL"] ** 2 + sn ** 2 / g["bL"] ** 2
    b, c = 2 * g["c"] * cs / g["aL"] ** 2, g["c"] ** 2 / g["aL"] ** 2 - 1
    return rc, ro, (-b + np.sqrt(b * b - 4 * A * c)) / (2 * A)


def label_of(P: np.ndarray, g: dict, K: tuple) -> np.ndarray:
    r, phi = polar(P, g)
    rc, ro, rl = radii(phi, g, K)
    lv = np.abs(phi) <= np.pi / 2
    return np.select([lv & (r <= rc), lv & (r <= ro), ~lv & (r <= rl)], [1, 2, 3], 0).astype(np.uint8)


def warp(P0: np.ndarray, g0: dict, g1: dict, K: tuple) -> np.ndarray:
    """Carry ED tissue points to geometry g1 with the same maps that define the labels."""
    r0, phi = polar(P0, g0)
    rc0, ro0, rl0 = radii(phi, g0, K)
    rc1, ro1, rl1 = radii(phi, g1, K)
    lv = np.abs(phi) <= np.pi / 2
    in0 = np.where(lv, rc0, rl0)              # cavity (LV or LA) radius
    bd0, bd1 = np.where(lv, ro0, rl0), np.where(lv, ro1, rl1)
    r1 = np.where(r0 <= in0, r0 * np.where(lv, rc1 / rc0, rl1 / rl0),
                  np.sqrt(np.maximum(rc1 ** 2 + r0 ** 2 - rc0 ** 2, 0)))   # area-preserving myocardium
    dirn = lambda g: np.cos(phi)[:, None] * -g["eu"] + np.sin(phi)[:, None] * g["ev"]
    inner = g1["B"] + r1[:, None] * dirn(g1)
    shift = (g1["B"] + bd1[:, None] * dirn(g1)) - (g0["B"] + bd0[:, None] * dirn(g0))
    outer = P0 + shift * np.exp(-(r0 - bd0) / DECAY_MM)[:, None]
    return np.where((r0 <= bd0)[:, None], inner, outer)


def ed_tissue(p: dict, rng, g0: dict, K: tuple) -> tuple:
    """ED scatterer positions, their amplitude scale, and which of them are blood."""
    half, R = np.deg2rad(p["sector_deg"]) / 2, p["depth_mm"] * 1.02
    r = np.sqrt(rng.uniform(1.0, R ** 2, N_TISSUE))      # uniform over the sector's area
    th = rng.uniform(-half * 1.03, half * 1.03, N_TISSUE)
    P = np.stack([r * np.sin(th), r * np.cos(th)], 1)
    rr, phi = polar(P, g0)
    rc, ro, rl = radii(phi, g0, K)
    lab = label_of(P, g0, K)
    d = P - g0["B"]
    y, v = d @ g0["eu"], d @ g0["ev"]                  # y: below the annulus line, v: lateral
    lv_out = (np.abs(phi) <= np.pi / 2) & (rr <= ro)
    # RV: an ellipse overlapping the septum, minus the LV, leaves a crescent; RA sits under it
    L, hw, t, rvw = g0["L"], g0["W"] / 2, p["wall_mm"], p["rv_width_mm"]
    vc, ay, bv = -0.6 * hw, 0.42 * L, 0.6 * hw + t + rvw
    e_rv = ((y + 0.42 * L) / ay) ** 2 + ((v - vc) / bv) ** 2
    e_rvw = ((y + 0.42 * L) / (ay + 4)) ** 2 + ((v - vc) / (bv + 4)) ** 2
    e_per = ((y + 0.42 * L) / (ay + 7)) ** 2 + ((v - vc) / (bv + 7)) ** 2
    up_ok = (y <= -4) & ~lv_out
    rv, rv_wall = up_ok & (e_rv <= 1), up_ok & (e_rv > 1) & (e_rvw <= 1)
    la_side = np.abs(phi) > np.pi / 2
    near_la = la_side & (rr <= rl + 4)
    ra_v = 0.5 * (-(hw + t) + vc - bv) - 2
    ra_a, ra_b = p["ra_long_mm"] / 2, p["ra_short_mm"] / 2
    e_ra = ((y + 4 - 0.8 * ra_a) / ra_a) ** 2 + ((v - ra_v) / ra_b) ** 2
    ra_ok = (y > -4) & ~lv_out & ~near_la
    ra, ra_wall = ra_ok & (e_ra <= 1), ra_ok & (e_ra > 1) & (e_ra <= 1.25)
    # pericardium: a thin sheet round the LV lateral wall and apex and round the RV free wall
    peri = ((np.abs(phi) <= np.pi / 2) & (phi > -0.25) & (rr > ro + 2) & (rr <= ro + 4.5)) | \
           ((y <= 0) & ~lv_out & (e_rvw > 1.06) & (e_per <= 1.0) & (v < 0))
    # smooth texture so tissue is not uniformly grey
    k = rng.normal(0, 1 / 25.0, (6, 2))
    tex = np.exp(0.35 * np.sin(P @ k.T + rng.uniform(0, 2 * np.pi, 6)).sum(1) / np.sqrt(6))
    amp = 0.22 * tex * (1 + 1.5 * (P[:, 1] < 18))            # background, brighter chest-wall layers
    amp = np.where(la_side & (rr > rl) & (rr <= rl + 3), 0.7, amp)       # LA wall and atrial septum
    amp = np.where(rv_wall | ra_wall, 0.7 * tex, amp)
    myo = lab == 2
    amp = np.where(myo, tex, amp)
    if p["dropout"]:                                  # beam nearly parallel to the lateral wall
        amp = np.where(myo & (v > 0) & (y > -0.75 * L) & (y < -0.3 * L), 0.2 * amp, amp)
    amp = np.where(peri & ~myo, 3.0, amp)
    blood = (lab == 1) | (lab == 3) | rv | ra
    return P, amp, blood


class Imager:
    """SIMUS -> IQ -> DAS on a polar grid -> envelope -> log -> Cartesian bounding box of the fan."""

    def __init__(self, p: dict):
        import pymust
        self.pm, self.p = pymust, p
        self.param = pymust.getparam("P4-2v")
        self.param.fs = 4 * self.param.fc
        self.half = np.deg2rad(p["sector_deg"]) / 2
        self.delays = pymust.txdelay(self.param, 0.0, 2 * self.half)
        self.rr = np.linspace(2.0, p["depth_mm"], 256)
        self.tt = np.linspace(-self.half, self.half, 128)
        R, T = np.meshgrid(self.rr, self.tt, indexing="ij")
        self.X, self.Z = R * np.sin(T) / 1000, R * np.cos(T) / 1000
        self.px = p["depth_mm"] / p["height"]
        w = int(round(2 * p["depth_mm"] * np.sin(self.half) / self.px))
        x = (np.arange(w) + 0.5 - w / 2) * self.px
        z = (np.arange(p["height"]) + 0.5) * self.px
        self.gx, self.gz = np.meshgrid(x, z)
        gr, gt = np.hypot(self.gx, self.gz), np.arctan2(self.gx, self.gz)
        self.fan = (gr <= p["depth_mm"]) & (np.abs(gt) <= self.half)
        self.coords = np.stack([(gr - self.rr[0]) / (self.rr[1] - self.rr[0]),
                                (gt - self.tt[0]) / (self.tt[1] - self.tt[0])])
        self.gain = (self.rr / self.rr[-1])[:, None] ** 1.0     # undo the spherical spreading loss
        self.n_rf = self.das = self.ref = None

    def frame(self, P: np.ndarray, amp: np.ndarray) -> np.ndarray:
        rf, _ = self.pm.simus(P[:, 0] / 1000, P[:, 1] / 1000, amp, self.delays, self.param)
        if self.n_rf is None:
            self.n_rf = rf.shape[0]
        rf = np.pad(rf, ((0, max(0, self.n_rf - rf.shape[0])), (0, 0)))[: self.n_rf]
        iq = self.pm.rf2iq(rf, self.param)
        if self.das is None:                          # the DAS matrix only depends on geometry: build once
            self.das = self.pm.dasmtx(iq, self.X, self.Z, self.delays, self.param)
        env = np.abs(self.das @ iq.flatten(order="F")).reshape(self.X.shape, order="F") * self.gain
        if self.ref is None:                          # one display level for the whole cine (no flicker)
            self.ref = np.percentile(env, 99.0)
        # a single diverging wave leaves cavities only ~17 dB under the walls: display headroom and a
        # grey-map gamma, as scanners' default displays do, bring them down to near black
        dr = self.p["dyn_range_db"]
        db = 20 * np.log10(env / self.ref + 1e-12) - self.p["headroom_db"]
        img = np.clip((db + dr) / dr, 0, 1) ** self.p["gamma"] * 255
        out = ndimage.map_coordinates(img, self.coords, order=1, mode="nearest")
        return np.where(self.fan, np.round(out), 0).astype(np.uint8)


def loop_frames(p: dict, n: int) -> tuple:
    """n frames of the loop over the first whole beat (ED .. next ED) -> indices, ED/ES positions, fill."""
    fps, period = p["fps_loop"], 60.0 / p["heart_rate"]
    e0 = int(round(p["ed_offset_s"] * fps))
    e1 = min(int(round((p["ed_offset_s"] + period) * fps)), p["n_loop"] - 1)
    es = (p["ed_offset_s"] + p["systole_s"]) * fps
    idx = [int(round(e0 + (e1 - e0) * i / (n - 1))) for i in range(n)]
    phase = ((np.array(idx) / fps - p["ed_offset_s"]) / period) % 1.0
    fill = lv_fill(phase, p["systole_s"] / period, p["ivrt_s"] / period)
    # ES: the smallest sampled LV; within the relaxation plateau, the sample nearest the true ES
    es_pos = min(range(n), key=lambda k: (round(float(fill[k]), 6), abs(idx[k] - es)))
    return idx, [0, n - 1], [es_pos], fill, fps * (n - 1) / (e1 - e0)


def make_case(seed: int, n_frames: int = 12) -> dict:
    p, rng = draw(seed)
    idx, ed, es, fill, fps = loop_frames(p, n_frames)
    fit_in_fan(p)
    g0 = geometry(p, 1.0)
    K = myo_k(p, g0)
    P0, amp, blood = ed_tissue(p, rng, g0, K)
    half = np.deg2rad(p["sector_deg"]) / 2
    rc, th = rng.uniform(3, 18, p["n_clutter"]), rng.uniform(-half, half, p["n_clutter"])
    clutter = np.stack([rc * np.sin(th), rc * np.cos(th)], 1)      # static near-field reverberators
    c_amp = rng.uniform(1.5, 3.0, p["n_clutter"]) * rng.choice([-1, 1], p["n_clutter"])
    tissue_amp = amp * rng.standard_normal(len(amp))
    blood_std = 10 ** (-p["blood_db"] / 20)
    im = Imager(p)
    pix = np.stack([im.gx.ravel(), im.gz.ravel()], 1)
    frames, labels = [], []
    for f in fill:
        g = geometry(p, float(f))
        P = warp(P0, g0, g, K)
        a = np.where(blood, blood_std * rng.standard_normal(len(amp)), tissue_amp)   # blood redrawn per frame
        frames.append(im.frame(np.concatenate([P, clutter]), np.concatenate([a, c_amp])))
        labels.append(np.where(im.fan, label_of(pix, g, K).reshape(im.fan.shape), 0).astype(np.uint8))
    labels = np.stack(labels)
    area = (labels == 1).sum((1, 2)) * im.px ** 2
    p.update(loop_indices=idx, fps=fps, n_frames=n_frames, n_scatterers=N_TISSUE)
    return dict(frames=np.stack(frames), labels=labels, fan=im.fan, spacing=np.array([im.px, im.px]),
                fps=np.array(fps), ed=np.array(ed, dtype=np.int64), es=np.array(es, dtype=np.int64),
                volume=area.astype(np.float64), params=np.array(json.dumps(p)))


def _work(args) -> tuple:
    out, seed, n = args
    t0 = time.perf_counter()
    save_case(case_path(Path(out), seed), make_case(seed, n))
    return seed, time.perf_counter() - t0


def main(argv=None) -> int:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(description="Foreign apical-4C phantom cines (pymust SIMUS), resumable.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", required=True, help="A:B (range) or a,b,c")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    if args.frames < 3:
        ap.error("--frames must be at least 3 (ED, ES and the next ED)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(args.seeds)
    todo = [(str(out), s, args.frames) for s in seeds if not case_path(out, s).exists()]
    print(f"{len(seeds) - len(todo)} of {len(seeds)} cases already written", file=sys.stderr)
    for seed, dt in tqdm(map_seeds(out, _work, todo, min(args.workers, len(todo))), total=len(todo),
                         desc="foreign phantom", unit="cine"):
        tqdm.write(f"case {seed}: {dt:.1f} s ({dt / args.frames:.1f} s/frame)")
    have = sorted(int(c.stem[5:]) for c in out.glob("case_*.npz"))
    (out / "manifest.json").write_text(json.dumps({"generator": GENERATOR, "seeds": have, "synthetic": True}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
