"""Labels of the fast path vs fp32, per structure and frame, with the bundled models.

For each bundled model (demo tiny models on phantom cines, simulated-echo models on simulated cines
and on phantoms) the same cine is segmented through `Session` twice: ``precision="fp32"`` and
``--precision`` (default ``bf16``: the numerics of the CPU fast path. ``auto`` would run these 32/64-wide
models in fp32, where bf16 does not pay, and compare fp32 with itself). Reports the minimum Dice per
structure and frame, pixels that differ, and the EF difference (points).
Bound (issue 13): Dice >= 0.99 per structure and frame, EF within 0.5 points.

    PYTHONPATH=EchoSAMSlicer/Logic:. python bench/fast_agreement.py [--model NAME ...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from echosam.cine import Cine
from echosam.compute import choose_path
from echosam.metrics import dice
from echosam.model_zoo import load_registry
from echosam.phantom import make_phantom
from echosam.pipeline import analyse_labels, load
from echosam.session import Session

LABELS = {"lv": 1, "myo": 2, "la": 3}


def phantom_case(seed: int, n_frames: int = 30, size: int = 112):
    ph = make_phantom(n_frames=n_frames, size=(size, size), seed=seed)
    return f"phantom seed {seed}", ph.cine, ph.labels


def simulated_case(seed: int, n_frames: int = 24, height: int = 128):
    sys.path.insert(0, ".")
    from tests.sim_fixtures import small
    from training.simulator.scene import simulate
    sim = simulate(small(seed, n_frames=n_frames, height=height))
    cine = Cine.from_array(sim.frames, spacing=sim.spacing, fps=sim.fps, name=f"sim{seed}")
    return f"simulated seed {seed}", cine, sim.labels


def box_of(mask) -> tuple:
    yx = np.argwhere(mask)
    return (int(yx[:, 1].min()), int(yx[:, 0].min()), int(yx[:, 1].max()), int(yx[:, 0].max()))


def segment(loaded, cine, truth, precision: str):
    keys = ("lv",) if loaded.prompted else tuple(k for k in ("lv", "myo", "la") if k in loaded.classes)
    s = Session(cine, loaded, structures=keys, precision=precision)
    if loaded.prompted:
        s.add_box(0, "lv", box_of(truth[0] == 1))
    return s.segment(), keys, s.compute_path


def compare(a, b, keys, cine) -> dict:
    dices = [dice(a[t] == LABELS[k], b[t] == LABELS[k]) for k in keys for t in range(len(a))
             if (a[t] == LABELS[k]).any() or (b[t] == LABELS[k]).any()]
    ef_a, ef_b = (analyse_labels(x, cine).summary()["ef_percent"] for x in (a, b))
    ef_diff = None if ef_a is None or ef_b is None else abs(ef_a - ef_b)
    return {"min_dice": float(min(dices)) if dices else 1.0, "mean_dice": float(np.mean(dices)) if dices else 1.0,
            "pixels_differ": int((a != b).sum()), "ef_fp32": ef_a, "ef_fast": ef_b, "ef_diff_points": ef_diff}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom-seeds", default="3,11")
    ap.add_argument("--sim-seeds", default="4300011")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "auto", "fp16"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", action="append", default=None, help="only these bundled models (default: all)")
    a = ap.parse_args(argv)
    path = choose_path("cpu", a.precision)
    print(f"compared with fp32: {path.describe()}; CPU {path.hardware}\n")
    cases = [phantom_case(int(s)) for s in a.phantom_seeds.split(",") if s]
    cases += [simulated_case(int(s)) for s in a.sim_seeds.split(",") if s]
    models = [e.name for e in load_registry() if e.bundled and (not a.model or e.name in a.model)]
    if not models:
        ap.error(f"no bundled model named {', '.join(a.model)}")
    rows = []
    print("| model | cine | min Dice | mean Dice | pixels differ | EF fp32 | EF fast | EF diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name in models:
        loaded = load(name, "cpu")
        for label, cine, truth in cases:
            if "demo" in name and label.startswith("simulated"):
                continue                     # demo models are phantom-trained; sim cines are out of their range
            ref, keys, _ = segment(loaded, cine, truth, "fp32")
            fast, _, used = segment(loaded, cine, truth, a.precision)
            r = dict(model=name, cine=label, path=used, **compare(ref, fast, keys, cine))
            rows.append(r)
            ef = [("-" if r[k] is None else f"{r[k]:.2f}") for k in ("ef_fp32", "ef_fast", "ef_diff_points")]
            print(f"| {name} | {label} | {r['min_dice']:.4f} | {r['mean_dice']:.4f} | {r['pixels_differ']} | "
                  f"{ef[0]} | {ef[1]} | {ef[2]} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"path": path.to_dict(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
