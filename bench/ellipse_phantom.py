"""A second foreign phantom, simpler than `foreign_phantom.py` and unlike it in every part: a half-ellipse LV
closed by mitral leaflets, scaled about its apex; myocardial scatterers carried in wall coordinates (position
along the wall, fraction across it), so the wall thickens as the cavity shrinks; static tissue scatterers
that take the brightness of whatever region they fall in on each frame; imaged by pymust SIMUS (P4-2v,
one diverging wave, DAS on a polar grid). Nothing of `training/simulator` is used, so models trained on that
simulator meet an anatomy, motion and image chain they never saw. Labels: CAMUS values from the same shapes.

    python bench/ellipse_phantom.py --out data/foreign_fpv --seeds 7700000:7700012 --frames 12
    python bench/ellipse_phantom.py --out data/foreign_fpv30 --seeds 7700000:7700006 --frames 30
    python bench/ellipse_phantom.py --out data/foreign_fp --seeds 7700000:7700012 --frames 12 --no-leaflets

``--frames`` frames over one beat from ED (the next ED is not included); ED at 0, ES the sampled frame of
the most contraction. About 2.5 s per frame per core (SIMUS, 15,000 scatterers).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")   # spawned workers import this first: one BLAS thread each

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.simulator.cache import case_path, map_seeds, parse_seeds, save_case  # noqa: E402

GENERATOR = "ellipse-phantom-1"
N_TISSUE, N_WALL, N_BLOOD = 9000, 4500, 900


def draw(seed: int) -> dict:
    g = np.random.default_rng(seed)
    u = lambda a, b: float(g.uniform(a, b))   # noqa: E731
    return dict(depth=u(140, 170), sector=np.deg2rad(u(70, 85)), L=u(70, 92), W=u(38, 52), T=u(7, 11),
                tilt=np.deg2rad(u(-12, 12)), apex_z=u(22, 38), apex_x=u(-8, 8), hr=u(55, 105), ef=u(0.25, 0.70),
                la_a=u(20, 27), la_b=u(16, 22), rv_b=u(12, 18), split=u(0.35, 0.65), ts=u(0.28, 0.36))


def systole_s(p: dict) -> float:
    tc = 60.0 / p["hr"]
    return p["ts"] * (tc / 0.9) ** 0.4


def contraction(t: float, p: dict) -> float:
    """0 at ED, 1 at ES: ejection, rapid filling to a quarter, diastasis, atrial kick back to 0."""
    tc, ts = 60.0 / p["hr"], systole_s(p)
    t = t % tc
    if t < ts:
        return 0.5 * (1 - np.cos(np.pi * t / ts))
    if t - ts < 0.16:
        return 1 - 0.75 * 0.5 * (1 - np.cos(np.pi * (t - ts) / 0.16))
    if t > tc - 0.12:
        return 0.25 * (1 - 0.5 * (1 - np.cos(np.pi * (t - (tc - 0.12)) / 0.12)))
    return 0.25


def valve_opening(t: float, p: dict) -> float:
    """0 shut (from ED through systole), 1 open in early filling and the atrial kick, half open between."""
    tc, ts = 60.0 / p["hr"], systole_s(p)
    t = t % tc
    if t < ts + 0.03 or t > tc - 0.02:
        return 0.0
    ramp = min((t - ts - 0.03) / 0.04, 1.0, (tc - 0.02 - t) / 0.04)
    return max(ramp, 0.0) * (1.0 if (t - ts < 0.2 or t > tc - 0.15) else 0.5)


def shape(c: float, p: dict) -> tuple:
    """LV length and width, wall thickness, LA half-axes at contraction c. The area EF is split between
    the long axis and the width; the wall thickens by up to 45 %; the LA fills while the LV empties."""
    shrink = 1 - np.sqrt(1 - p["ef"])
    al, aw = 1 - (1 - shrink) ** (2 * p["split"]), 1 - (1 - shrink) ** (2 * (1 - p["split"]))
    return (p["L"] * (1 - al * c), p["W"] * (1 - aw * c), p["T"] * (1 + 0.45 * c),
            p["la_a"] * (1 + 0.25 * c), p["la_b"] * (1 + 0.15 * c))


def to_local(x, z, p):
    """Probe (x lateral, z depth) mm -> heart (u along the axis from the apex, v across)."""
    dx, dz = x - p["apex_x"], z - p["apex_z"]
    ct, st = np.cos(p["tilt"]), np.sin(p["tilt"])
    return dz * ct + dx * st, dx * ct - dz * st


def to_probe(u, v, p):
    ct, st = np.cos(p["tilt"]), np.sin(p["tilt"])
    return p["apex_x"] + v * ct + u * st, p["apex_z"] + u * ct - v * st


def regions(u, v, c: float, p: dict) -> tuple:
    """Masks of LV, myocardium, LA, pericardium, right heart (RV and RA), LA wall at heart coordinates."""
    L, W, T, la, lb = shape(c, p)
    lv = (((u - L) / L) ** 2 + (v / (W / 2)) ** 2 <= 1) & (u <= L)
    myo = (((u - L) / (L + T)) ** 2 + (v / (W / 2 + T)) ** 2 <= 1) & ~lv & (u <= L)
    e_la = ((u - L - la) / la) ** 2 + (v / lb) ** 2
    la_ = (e_la <= 1) & (u > L)
    peri = (((u - L) / (L + T + 2.5)) ** 2 + (v / (W / 2 + T + 2.5)) ** 2 <= 1) & ~lv & ~myo & (u <= L + 3)
    rv_c = W / 2 + T + p["rv_b"]
    rv = (((u - 0.6 * p["L"] - 8) / (0.62 * p["L"])) ** 2 + ((v + rv_c) / p["rv_b"]) ** 2 <= 1) & ~myo & ~peri
    ra = (((u - L - 20) / 20) ** 2 + ((v + rv_c) / 17) ** 2 <= 1) & (u > L + 2)
    return lv, myo, la_, peri, rv | ra, (e_la <= 1.25) & ~la_ & (u > L) & ~myo


def leaflets(c: float, t: float, p: dict, g, n: int = 260) -> tuple:
    """Two bright mitral leaflets hinged at the LV's basal corners: across the base, bowed a little towards
    the LA, when shut; hanging into the LV when open. The LV label ends at the annulus chord either way."""
    L, W, *_ = shape(c, p)
    o, length = valve_opening(t, p), 0.55 * W / 2
    us, vs = [], []
    for side in (-1, 1):
        s = np.linspace(0, 1, n // 2)
        ang = o * np.deg2rad(75)
        bow = 0.12 * length * np.sin(np.pi * s) * (1 - o)
        us.append(L - s * length * np.sin(ang) + bow + g.normal(0, 0.4, len(s)))
        vs.append(side * W / 2 - side * s * length * np.cos(ang) + g.normal(0, 0.4, len(s)))
    x, z = to_probe(np.concatenate(us), np.concatenate(vs), p)
    return x, z, g.standard_normal(len(x)) * 4.0


def simulate(seed: int, n: int = 12, leaflets_on: bool = True) -> dict:
    import pymust

    p = draw(seed)
    g = np.random.default_rng([seed, 1])
    D, S = p["depth"], p["sector"]
    H = 240
    px = D / H
    half = D * np.sin(S / 2)
    GX, GZ = np.meshgrid(-half + (np.arange(int(np.ceil(2 * half / px))) + 0.5) * px, (np.arange(H) + 0.5) * px)
    fan = (np.hypot(GX, GZ) <= D) & (np.abs(np.arctan2(GX, GZ)) <= S / 2) & (np.hypot(GX, GZ) >= 2)
    tc = 60.0 / p["hr"]
    times = np.arange(n) * tc / n
    cs = np.array([contraction(t, p) for t in times])
    r = np.sqrt(g.uniform(9, (D * 1.02) ** 2, N_TISSUE))
    th = g.uniform(-S / 2 * 1.05, S / 2 * 1.05, N_TISSUE)
    bx, bz, ba = r * np.sin(th), r * np.cos(th), g.standard_normal(N_TISSUE)
    f, phi, ma = g.uniform(0, 1, N_WALL), g.uniform(-np.pi / 2, np.pi / 2, N_WALL), g.standard_normal(N_WALL)
    cx, cz, ca = g.uniform(-12, 12, 40), g.uniform(3, 18, 40), g.standard_normal(40) * 6   # near-field clutter
    drop = g.uniform(0.2, 0.6)                # lateral wall dropout
    param = pymust.getparam("P4-2v")
    param.fs = 4 * param.fc
    delays = pymust.txdelay(param, 0.0, float(S))
    rr, tt = np.linspace(2, D, 256) / 1000.0, np.linspace(-S / 2, S / 2, 128)
    R, TT = np.meshgrid(rr, tt, indexing="ij")
    das = n_rf = None
    envs, labels = [], []
    for t, c in zip(times, cs):
        L, W, T, _, _ = shape(c, p)
        lv, myo, la_, peri, right, la_wall = regions(*to_local(bx, bz, p), c, p)
        amp_b = ba * np.where(lv | la_ | right | myo, 0.0, np.where(peri, 3.0, np.where(la_wall, 1.6, 0.7)))
        mx, mz = to_probe(L - (L + f * T) * np.cos(phi), (W / 2 + f * T) * np.sin(phi), p)
        amp_m = ma * 1.3 * np.where((W / 2 + f * T) * np.sin(phi) > W / 2 * 0.7, 1 - drop, 1.0)
        lx, lz, l_amp = leaflets(c, t, p, g) if leaflets_on else (np.zeros(0), np.zeros(0), np.zeros(0))
        bu, bv = g.uniform(-5, p["L"] + 60, N_BLOOD), g.uniform(-70, 40, N_BLOOD)   # blood, redrawn
        b_lv, _, b_la, _, b_right, _ = regions(bu, bv, c, p)
        keep = b_lv | b_la | b_right
        blx, blz = to_probe(bu[keep], bv[keep], p)
        xs = np.concatenate([bx, mx, blx, cx, lx])
        zs = np.concatenate([bz, mz, blz, cz, lz])
        amps = np.concatenate([amp_b, amp_m, g.standard_normal(keep.sum()) * 0.03, ca, l_amp])
        rf, _ = pymust.simus(xs / 1000.0, zs / 1000.0, amps, delays, param)
        n_rf = n_rf or rf.shape[0]            # one RF length (the first frame's) so one DAS matrix serves all
        rf = np.pad(rf, ((0, max(n_rf - rf.shape[0], 0)), (0, 0)))[:n_rf]
        iq = pymust.rf2iq(rf, param)
        if das is None:
            das = pymust.dasmtx(iq, R * np.sin(TT), R * np.cos(TT), delays, param)
        envs.append(np.abs((das @ iq.flatten(order="F")).reshape(R.shape, order="F")) * (R * 1000.0) ** 0.6)
        lv, myo, la_, *_ = regions(*to_local(GX, GZ, p), c, p)
        lab = np.zeros(GX.shape, np.uint8)
        lab[la_], lab[myo], lab[lv] = 3, 2, 1
        labels.append(np.where(fan, lab, 0).astype(np.uint8))
    ref = np.quantile(np.concatenate([e.ravel() for e in envs]), 0.8) * 10 ** (12 / 20)
    coords = [((np.hypot(GX, GZ) / 1000.0 - rr[0]) / (rr[1] - rr[0])).ravel(),
              ((np.arctan2(GX, GZ) - tt[0]) / (tt[1] - tt[0])).ravel()]
    frames = []
    for e in envs:                            # 55 dB display, one reference for the whole cine
        grey = np.clip((20 * np.log10(np.maximum(e, 1e-12) / ref) + 55) / 55, 0, 1) * 255
        img = ndimage.map_coordinates(grey, coords, order=1).reshape(GX.shape)
        frames.append(np.where(fan, np.clip(np.rint(img), 0, 255), 0).astype(np.uint8))
    return {"frames": np.stack(frames), "labels": np.stack(labels), "fan": fan, "spacing": np.array([px, px]),
            "fps": np.array(n / tc), "ed": np.array([0]), "es": np.array([int(np.argmax(cs))]), "volume": cs,
            "params": np.array(json.dumps({"view": "a4c", "generator": GENERATOR, "seed": seed,
                                           **{k: float(v) for k, v in p.items()}}))}


def _work(args) -> tuple:
    out, seed, n, leaflets_on = args
    t0 = time.perf_counter()
    save_case(case_path(Path(out), seed), simulate(seed, n, leaflets_on))
    return seed, time.perf_counter() - t0


def main(argv=None) -> int:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(description="Half-ellipse apical phantom cines (pymust SIMUS), resumable.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", required=True, help="A:B (range) or a,b,c")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-leaflets", action="store_true",
                    help="no mitral leaflets: the LV and LA are one dark cavity, as on a view that misses the valve")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [(str(out), s, a.frames, not a.no_leaflets) for s in parse_seeds(a.seeds) if not case_path(out, s).exists()]
    for seed, dt in tqdm(map_seeds(out, _work, todo, min(a.workers, len(todo))), total=len(todo),
                         desc="ellipse phantom", unit="cine"):
        tqdm.write(f"case {seed}: {dt:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
