"""Where a model's EF error comes from: the LV's size at end-diastole and end-systole, and where the missing
end-diastolic cavity lies.

    python bench/ef_bias.py --data data/sim/heldout [--data data/sim/simus ...] [--model NAME_OR_PATH] [--limit N]

Runs the evaluation protocol of `training.evaluate --protocol loop` (a prompted model: one tight box per
structure on frame 0) and, per set, prints:
- **EF MAE / bias**, as in the evaluation tables;
- **LV area, pred / true, at the true ED and ES frames** (mean over loops): EF = 1 - ESV / EDV, so an ED
  cavity that comes out smaller than the truth, relative to the ES one, makes EF too low;
- **curve slope**: the least-squares slope of the predicted LV volume curve (method of disks) against the true
  one, per loop: 1 follows the truth's swing, below 1 is a curve pulled towards its mean;
- **LV area, pred / true, on frame 0 (MemSAM's prompted frame) and on the true ED frames at least 2 frames
  later**: whether the ED cavity is short where the loop starts (and a prompt was given) or only later;
- **ED miss by fifth**: the share of the true ED cavity the prediction leaves out, in fifths of the true long
  axis from the mitral annulus (base) to the apex.
Simulated loops only: they carry exact labels. ``--json`` writes the numbers per set.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "EchoSAMSlicer" / "Logic"), str(ROOT)]

from echosam.cardiac import long_axis  # noqa: E402
from echosam.checkpoints import load_model  # noqa: E402
from training import loop_eval as le  # noqa: E402

FIFTHS = 5


def missed_by_fifth(pred_lv: np.ndarray, true_lv: np.ndarray, true_la, spacing) -> tuple:
    """(missed, total) pixel counts of the true LV cavity per fifth of its long axis, base first: ``missed``
    are the true pixels the prediction leaves out. Positions are projections on the true base -> apex axis."""
    ax = long_axis(true_lv, true_la, spacing)
    yx = np.argwhere(true_lv).astype(float)
    sp = np.array([spacing[0], spacing[1]], float)
    base, apex = ax.base_mid[::-1] * sp, ax.apex[::-1] * sp          # (x, y) pixels -> (row, col) mm
    u = (apex - base) / max(np.linalg.norm(apex - base), 1e-9)
    s = ((yx * sp - base) @ u) / max(np.linalg.norm(apex - base), 1e-9)
    fifth = np.clip((s * FIFTHS).astype(int), 0, FIFTHS - 1)
    missed = ~pred_lv[true_lv]
    return (np.bincount(fifth[missed], minlength=FIFTHS), np.bincount(fifth, minlength=FIFTHS))


def set_summary(loaded, cases: list) -> dict:
    rows, missed, total = [], np.zeros(FIFTHS), np.zeros(FIFTHS)
    key, later_ed = [], []
    for case in map(le.load_case, cases):
        pred = le.one_reading(loaded, case, le.STRUCT, le.truth_boxes(case["labels"][0]))
        rows.append(le.score(pred, case))
        key.append(le.lv_area_ratio(pred, case["labels"], 0))
        later_ed += [le.lv_area_ratio(pred, case["labels"], t) for t in case["ed"] if t >= 2]
        for t in case["ed"]:
            m, n = missed_by_fifth(pred[t] == 1, case["labels"][t] == 1, case["labels"][t] == 3, case["spacing"])
            missed, total = missed + m, total + n
    e = np.array([r["ef_error"] for r in rows], float)
    e = e[np.isfinite(e)]
    mean = lambda k: float(np.nanmean([r[k] for r in rows]))  # noqa: E731
    return {"loops": len(rows), "ef_mae": float(np.abs(e).mean()), "ef_bias": float(e.mean()),
            "lv_area_ratio_ed": mean("lv_area_ratio_ed"), "lv_area_ratio_es": mean("lv_area_ratio_es"),
            "curve_slope": mean("volume_slope"), "lv_area_ratio_frame0": float(np.nanmean(key)),
            "lv_area_ratio_later_ed": float(np.nanmean(later_ed)) if later_ed else float("nan"),
            "later_ed_frames": len(later_ed),
            "ed_missed_by_fifth_base_to_apex": (missed / np.maximum(total, 1)).tolist()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", action="append", required=True, help="a folder of simulated case_*.npz loops (repeat)")
    p.add_argument("--model", default="echosam-sim-memsam-small")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", default=None, help="write the numbers per set to this file")
    a = p.parse_args(argv)
    sets = {d: sorted(Path(d).glob("case_*.npz"))[:a.limit] for d in a.data}
    empty = [d for d, c in sets.items() if not c]
    if empty:
        p.error(f"no case_*.npz loops in {', '.join(empty)}")
    loaded = load_model(a.model, device="cpu")
    print(f"{a.model}; ED miss: share of the true ED cavity left out, by fifth of the long axis, base -> apex")
    print("| set | loops | EF MAE | EF bias | LV area pred/true at ED | at ES | on frame 0 "
          "| at ED frames from frame 2 on (n) | curve slope | ED miss by fifth |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    out = {}
    for d, cases in sets.items():
        s = out[Path(d).name] = set_summary(loaded, cases)
        fifths = " / ".join(f"{v:.2f}" for v in s["ed_missed_by_fifth_base_to_apex"])
        print(f"| {Path(d).name} | {s['loops']} | {s['ef_mae']:.1f} | {s['ef_bias']:+.1f} "
              f"| {s['lv_area_ratio_ed']:.3f} | {s['lv_area_ratio_es']:.3f} | {s['lv_area_ratio_frame0']:.3f} "
              f"| {s['lv_area_ratio_later_ed']:.3f} "
              f"({s['later_ed_frames']}) | {s['curve_slope']:.2f} | {fifths} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "sets": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
