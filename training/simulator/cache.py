"""Simulated sets on disk: one ``case_SEED.npz`` per cine, made in parallel, resumable.

A case is written to a temporary name and renamed when complete, so an interrupted run leaves only
whole cases; rerunning skips them. ``manifest.json`` is written last and lists the seeds, the
parameter ranges and the generator version.

    python -m training.simulator.cache --out data/sim/train --seeds 0:480 --workers 2
    python -m training.simulator.cache --out data/sim/heldout --seeds 900000:900040 --ranges outside
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..datasets.clips import DatasetError
from .scene import Ranges, sample_params, simulate

GENERATOR = "echosam-sim-3"   # 2: valves and annulus no longer erased by the blood; 3: mitral valve shut at ED
RANGES = {
    "train": Ranges(),
    # the second training set: darker displays (more headroom) and dark surroundings, closer to what
    # scanners export at low gain (checked against the pydicom-data apical cine's grey levels)
    "train_dark": Ranges(headroom_db=(14.0, 40.0), dark_background_p=0.5),
    # the third training set: scanner-default displays, where the display top sits far above typical
    # tissue, so only walls, valves and pericardium reach mid grey, cavities are black and the fan's sides
    # nearly so (the pydicom-data apical cine: fan median grey 10, 99th percentile 118), on wide, deep fans
    "train_real": Ranges(headroom_db=(32.0, 55.0), dyn_range=(45.0, 65.0), dark_background_p=0.85,
                         dark_background=(0.002, 0.04), depth=(140.0, 200.0), sector_deg=(70.0, 95.0)),
    # the fourth: leaflets and annulus faint to invisible (a thin or off-axis valve, low gain), so the LV's base
    # must be read from where the walls end; with bright valves only, MemSAM's EF fell 5 points (bias -10 against
    # -5) on a foreign phantom once its leaflets were left out (docs/evaluation.md)
    "train_faint_valves": Ranges(valve=(0.0, 0.6)),
    # selection loops for the prompt-free heart zoom: fans deeper than most training loops (the heart smaller in
    # the fan), bright and dark displays; for choosing a rule, never for training or for a held-out table
    "select_deep": Ranges(depth=(180.0, 215.0), headroom_db=(8.0, 40.0), dark_background_p=0.3),
    # held-out 'outside' set: every range widened past the training ranges
    "outside": Ranges(ef=(0.15, 0.80), heart_rate=(45.0, 130.0), fps=(20.0, 70.0), depth=(110.0, 210.0),
                      sector_deg=(55.0, 95.0), f0=(1.6, 3.8), dyn_range=(40.0, 75.0), height=(140, 300),
                      dilated_p=0.3),
    # held-out, outside the ranges AND darker: headroom past both training sets' ranges
    "outside_dark": Ranges(ef=(0.15, 0.80), heart_rate=(45.0, 130.0), fps=(20.0, 70.0), depth=(110.0, 210.0),
                           sector_deg=(55.0, 95.0), f0=(1.6, 3.8), dyn_range=(40.0, 75.0), height=(140, 300),
                           dilated_p=0.3, headroom_db=(10.0, 44.0), dark_background_p=0.5),
}


def case_path(out: Path, seed: int) -> Path:
    return out / f"case_{seed:06d}.npz"


def params_summary(sp) -> dict:
    return {"seed": sp.seed, "view": sp.view, "ef_model": sp.ef, "heart_rate": sp.heart_rate, "fps": sp.fps,
            "n_frames": sp.n_frames, "depth_mm": sp.probe.depth, "sector_deg": float(np.rad2deg(sp.probe.sector)),
            "f0_mhz": sp.probe.f0, "dyn_range_db": sp.probe.dyn_range,
            "hypokinesis": sp.shape.hypo_depth if sp.shape.hypo_side else 0.0,
            "artefacts": {k: sp.look[k] for k in ("dropout", "clutter", "reverb", "shadow", "smoke")}}


def write_case(out: Path, seed: int, ranges: str) -> str:
    dst = case_path(out, seed)
    if dst.exists():
        return "skip"
    sp = sample_params(seed, RANGES[ranges])
    save_case(dst, case_arrays(sp, simulate(sp)))
    return "done"


def case_arrays(sp, cine) -> dict:
    """What a ``case_*.npz`` holds for a simulated cine (`training.datasets.simulated.load_case` reads it)."""
    return dict(frames=cine.frames, labels=cine.labels, fan=cine.fan, spacing=np.array(cine.spacing),
                fps=np.array(cine.fps), ed=np.array(cine.ed_frames, dtype=np.int64),
                es=np.array(cine.es_frames, dtype=np.int64), volume=cine.volume,
                params=np.array(json.dumps(params_summary(sp))))


def save_case(dst: Path, arrays: dict) -> None:
    """Write a case to a temporary name, then rename it: an interrupted run never leaves half a case."""
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, dst)


def map_seeds(out: Path, work, todo: list, workers: int):
    """``work(item)`` for every item of ``todo`` in ``workers`` spawned processes (one torch/BLAS thread each),
    yielding results as they finish; temporary files an interrupted run left in ``out`` are removed first."""
    for stale in out.glob(".case_*.tmp.npz"):
        stale.unlink()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with get_context("spawn").Pool(max(int(workers), 1)) as pool:
        yield from pool.imap_unordered(work, todo)


def _work(args) -> tuple:
    out, seed, ranges = args
    t0 = time.perf_counter()
    return seed, write_case(Path(out), seed, ranges), time.perf_counter() - t0


def generate(out, seeds, ranges: str = "train", workers: int = 2, progress: bool = True) -> dict:
    from tqdm import tqdm

    out = Path(out)
    made_by = _made_by(out)
    if made_by not in (None, GENERATOR):       # resuming would mix two versions of the simulator in one set
        raise DatasetError(f"{out} holds cases made by {made_by}, this simulator is {GENERATOR}: write the new "
                           "cases to another folder (or delete this one to remake it).")
    out.mkdir(parents=True, exist_ok=True)
    todo = [(str(out), int(s), ranges) for s in seeds]
    t0 = time.perf_counter()
    done = 0
    for seed, status, dt in tqdm(map_seeds(out, _work, todo, workers), total=len(todo), disable=not progress,
                                 desc=f"simulating {out.name}", unit="cine"):
        done += status == "done"
    wall = time.perf_counter() - t0
    n_frames = sum(int(np.load(case_path(out, s), allow_pickle=False)["frames"].shape[0]) for _, s, _ in todo)
    manifest = {"generator": GENERATOR, "ranges": ranges, "range_values": asdict(RANGES[ranges]),
                "seeds": [int(s) for s in seeds], "n_cases": len(todo), "n_frames": n_frames,
                "synthetic": True, "note": "simulated echocardiography (training.simulator); no patient data"}
    if done:
        manifest["last_run"] = {"cases": done, "wall_s": round(wall, 1), "workers": workers}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _made_by(out: Path):
    """The generator named by ``out``'s manifest (None: no manifest yet)."""
    try:
        return json.loads((out / "manifest.json").read_text()).get("generator")
    except FileNotFoundError:
        return None


def parse_seeds(text: str) -> list:
    a, _, b = text.partition(":")
    return list(range(int(a), int(b))) if b else [int(s) for s in text.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Make a simulated echo set on disk (resumable).")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", required=True, help="A:B (range) or a,b,c")
    ap.add_argument("--ranges", default="train", choices=sorted(RANGES))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        m = generate(args.out, parse_seeds(args.seeds), args.ranges, args.workers)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in m.items() if k not in ("seeds", "range_values")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
