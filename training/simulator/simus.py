"""An independent second generator: the same anatomy and motion imaged by pymust's SIMUS.

SIMUS (Garcia, pymust) computes the RF signals of every element of a real phased array (P4-2v,
64 elements, 2.7 MHz) from point scatterers with a frequency-domain acoustic model, with a
diverging-wave transmit covering the sector; the images are then beamformed by delay-and-sum on a
polar grid (pymust ``dasmtx``), envelope-detected, log-compressed and scan-converted to the same
grid as `scene.simulate`, with labels from the same geometry. Nothing of the convolution model
(`beam.py`: PSF, splatting, TGC model, artefacts) is used, so a model that only learnt that
generator's look shows it here. It is slow (about 4 s per frame per core, 100x the convolution model),
so its cines are short: ``n_frames`` frames from ED to ES, or over one whole beat (``--span cycle``).

    python -m training.simulator.simus --out data/sim/simus --seeds 950000:950024 --frames 6 --workers 2
    python -m training.simulator.simus --out data/sim/simus_cycle --seeds 960000:960016 --frames 12 --span cycle
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from echosam.errors import CineError
from scipy import ndimage

from .beam import sector_mask
from .cache import GENERATOR, RANGES, case_path, map_seeds, params_summary, save_case
from .scene import Canvas, Ranges, background_map, label_map, loop_motion, output_grid, sample_params, tissue_frames

N_SCATTERERS = 10000


SPANS = ("systole", "cycle")


def frame_indices(timing, n: int, span: str = "systole") -> tuple:
    """The loop frames SIMUS images -> (indices, ED positions, ES positions) within them.

    ``systole``: ``n`` frames from the first ED to the next ES (ED first, ES last). ``cycle``: ``n`` frames from
    the first ED through the ES to the next ED (or the loop's end when it holds no second ED), so the ED/ES
    finder has a whole beat to work on; the ES is the sampled frame nearest the true one."""
    if span not in SPANS:
        raise CineError(f"span {span!r} is not one of {SPANS}.")
    ed = timing.ed_frames[0] if timing.ed_frames else 0
    es = next((s for s in timing.es_frames if s > ed), None)
    if es is None:
        raise CineError("The simulated loop has no end-systolic frame after its first end-diastolic one; "
                        "simulate at least one full cardiac cycle.")
    if span == "systole":
        return [int(round(ed + (es - ed) * i / (n - 1))) for i in range(n)], [0], [n - 1]
    nxt = next((e for e in timing.ed_frames if e > es), None)
    end = nxt if nxt is not None else len(timing.times_s) - 1
    idx = [int(round(ed + (end - ed) * i / (n - 1))) for i in range(n)]
    es_pos = int(np.argmin([abs(i - es) for i in idx]))
    return idx, [0] + ([n - 1] if nxt is not None else []), [es_pos]


def simulate_simus(seed: int, n_frames: int = 6, ranges: Ranges | None = None, span: str = "systole") -> dict:
    import pymust

    sp = sample_params(seed, ranges or Ranges())
    rng = np.random.default_rng([seed, 11])
    p = sp.probe
    motion = loop_motion(sp, rng)
    idx, ed_pos, es_pos = frame_indices(motion[0], n_frames, span)
    cv = Canvas(p)
    background = background_map(cv, sp, rng)
    r = np.sqrt(rng.uniform(max(p.r_min - 3, 1.0) ** 2, (p.depth * 1.02) ** 2, N_SCATTERERS))
    th = rng.uniform(-p.sector / 2 * 1.05, p.sector / 2 * 1.05, N_SCATTERERS)
    xy0 = np.stack([r * np.sin(th), r * np.cos(th)], axis=1)
    amp0 = rng.standard_normal(N_SCATTERERS)
    param = pymust.getparam("P4-2v")
    param.fs = 4 * param.fc
    delays = pymust.txdelay(param, 0.0, float(p.sector))
    rr = np.linspace(max(p.r_min, 2.0), p.depth, 256) / 1000.0
    tt = np.linspace(-p.sector / 2, p.sector / 2, 128)
    R, T = np.meshgrid(rr, tt, indexing="ij")
    gx, gy, px = output_grid(p, sp.height)
    fan = sector_mask(p, gx, gy)
    das, n_rf = None, None
    frames, labels, env_all = [], [], []
    for t, fr, xy, e, b in tissue_frames(sp, xy0, motion, cv, background, rng, frame_ids=idx):
        rc = amp0 * np.sqrt(np.maximum(e, 0)) * np.where(b > 0.5, rng.standard_normal(len(e)), 1.0)
        rf, _ = pymust.simus(xy[:, 0] / 1000.0, xy[:, 1] / 1000.0, rc, delays, param)
        # SIMUS sizes the RF to the deepest scatterer: keep the first frame's length so one DAS matrix serves all
        n_rf = n_rf or rf.shape[0]
        rf = np.pad(rf, ((0, max(n_rf - rf.shape[0], 0)), (0, 0)))[:n_rf]
        iq = pymust.rf2iq(rf, param)
        if das is None:
            das = pymust.dasmtx(iq, R * np.sin(T), R * np.cos(T), delays, param)
        b_iq = (das @ iq.flatten(order="F")).reshape(R.shape, order="F")
        env_all.append(np.abs(b_iq) * (R * 1000.0) ** 0.5)        # spreading loss compensation (a fixed TGC)
        labels.append(label_map(fr, gx, gy, fan))
    ref = np.quantile(np.concatenate([e.ravel() for e in env_all]), 0.75) * 10 ** (14 / 20.0)
    fr_ = (np.hypot(gx, gy) / 1000.0 - rr[0]) / (rr[1] - rr[0])
    ft = (np.arctan2(gx, gy) - tt[0]) / (tt[1] - tt[0])
    for env in env_all:
        db = 20 * np.log10(np.maximum(env, 1e-12) / ref)
        g = np.clip((db + 55.0) / 55.0, 0, 1) * 255.0
        img = ndimage.map_coordinates(g, [fr_.ravel(), ft.ravel()], order=1, mode="constant").reshape(gx.shape)
        img[~fan] = 0
        frames.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return {"frames": np.stack(frames), "labels": np.stack(labels), "fan": fan, "spacing": np.array([px, px]),
            "fps": np.array(sp.fps * (len(idx) - 1) / max(idx[-1] - idx[0], 1)), "ed": np.array(ed_pos),
            "es": np.array(es_pos), "volume": motion[0].volume[idx],
            "params": np.array(json.dumps({**params_summary(sp), "generator": "pymust-simus", "frames": idx, "span": span}))}


def write_case(out: Path, seed: int, n_frames: int, span: str = "systole", ranges: str = "train") -> str:
    """Simulate one seed into ``out`` unless it is there (resumable; `cache.save_case` writes it whole); ``ranges``:
    a `cache.RANGES` name for the anatomy and probe."""
    dst = case_path(out, seed)
    if dst.exists():
        return f"{dst.name}: already there"
    t0 = time.perf_counter()
    save_case(dst, simulate_simus(seed, n_frames, RANGES[ranges], span=span))
    return f"{dst.name}: {n_frames} frames in {time.perf_counter() - t0:.0f} s"


def _work(args) -> str:
    """One seed -> its status line; a seed whose loop cannot give the span (e.g. its only ES comes before its
    only ED) is skipped with the reason, so one such seed does not stop the whole set."""
    try:
        return write_case(*args)
    except CineError as e:
        return f"{case_path(args[0], args[1]).name}: skipped ({e})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Held-out cines from pymust SIMUS on the simulator's anatomy.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", required=True, help="A:B")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--workers", type=int, default=1, help="processes, one case each at a time")
    ap.add_argument("--span", choices=SPANS, default="systole",
                    help="systole: frames from ED to ES; cycle: ED -> ES -> next ED (tests the ED/ES finder)")
    ap.add_argument("--ranges", choices=sorted(RANGES), default="train",
                    help="the parameter ranges of the anatomy and probe (training.simulator.cache.RANGES)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    a, _, b = args.seeds.partition(":")
    skipped = []
    jobs = [(out, seed, args.frames, args.span, args.ranges) for seed in range(int(a), int(b))]
    for line in map_seeds(out, _work, jobs, args.workers):
        print(line, flush=True)
        if ": skipped (" in line:
            skipped.append(line)
    # the anatomy's version: version 1 hid the mitral leaflets and annulus under the blood
    (out / "manifest.json").write_text(json.dumps({"generator": "pymust-simus (P4-2v, diverging wave, DAS)",
                                                   "anatomy": GENERATOR, "seeds": args.seeds,
                                                   "frames_per_case": args.frames, "span": args.span,
                                                   "ranges": args.ranges,
                                                   "skipped": sorted(skipped), "synthetic": True}, indent=1))
    if skipped:
        print(f"{len(skipped)} seed(s) skipped (listed in {out / 'manifest.json'})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
