"""Where MemSAM's error comes from: the same loops scored with better and better prompts.

    python bench/memsam_ceiling.py --data data/sim/val [--model NAME_OR_PATH] [--limit N]

- ``box on frame 0``: the evaluation protocol (the tight box of each structure's true frame-0 mask), memory
  propagates the rest;
- ``true mask on frame 0``: frame 0 seeded with the TRUE masks instead; what is left is propagation's error;
- ``true box on every frame``: every frame decoded from its own true tight box, so the memory adds nothing;
  what is left is the per-structure decoder's error at this model size.
A prompt-zoomed MemSAM (`echosam.zoom`) sees the protocol's crop (around the frame-0 boxes) in every row.
Prints one table (LV / ES LV / MYO / LA Dice, EF MAE and bias) with the same scoring as `training.evaluate`.
Simulated loops only: they carry exact labels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "EchoSAMSlicer" / "Logic"), str(ROOT)]

from echosam.checkpoints import load_model  # noqa: E402
from training import loop_eval as le  # noqa: E402


def run(loaded, case, mode: str) -> np.ndarray:
    if mode == "box0":                                   # the protocol itself, through its own code
        return le.one_reading(loaded, case, le.STRUCT, le.truth_boxes(case["labels"][0]))
    # the same crop as the protocol (a prompt-zoomed model: around the frame-0 boxes), then better prompts
    s, region = le.case_session(loaded, case, le.STRUCT, le.truth_boxes(case["labels"][0]))
    crop = (lambda a: a) if region is None else region.crop
    frames = range(len(case["labels"])) if mode == "every_box" else [0]
    for t in frames:
        labels = crop(case["labels"][t])
        for k, box in le.truth_boxes(labels).items():    # truth_boxes lists only the structures present
            if mode == "mask0":
                s.set_mask(t, k, labels == le.LABEL[k])
            else:
                s.add_box(t, k, tuple(float(v) for v in box))
    s.propagate()
    labels = np.asarray(s.labels).copy()
    return labels if region is None else region.uncrop(labels)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a folder of simulated case_*.npz loops")
    p.add_argument("--model", default="echosam-sim-memsam-small")
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args(argv)
    cases = sorted(Path(a.data).glob("case_*.npz"))[:a.limit]
    if not cases:
        p.error(f"no case_*.npz loops in {a.data}")
    loaded = load_model(a.model, device="cpu")
    modes = {"box0": "box on frame 0 (protocol)", "mask0": "true mask on frame 0", "every_box": "true box on every frame"}
    print(f"{a.model} on {len(cases)} loops of {a.data}")
    print("| prompts | LV | ES LV | MYO | LA | EF MAE | EF bias |\n|---|---|---|---|---|---|---|")
    for mode, title in modes.items():
        rows = [le.score(run(loaded, c, mode), c) for c in map(le.load_case, cases)]
        e = np.array([r["ef_error"] for r in rows], float)
        e = e[np.isfinite(e)]
        dice = [np.nanmean([r[k] for r in rows]) for k in ("dice_lv", "dice_lv_es", "dice_myo", "dice_la")]
        print(f"| {title} | " + " | ".join(f"{d:.3f}" for d in dice) + f" | {np.abs(e).mean():.1f} | {e.mean():+.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
