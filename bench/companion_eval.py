"""MemSAM with and without its companion (`echosam.companion`) on simulated loops, paired per loop.

    python bench/companion_eval.py --data data/sim/draw9 --data data/sim/draw9_dark --out runs/companion.jsonl
    python bench/companion_eval.py --summary runs/companion.jsonl          # the numbers again, no model run

Each loop: the model from the TRUE frame-0 box of each structure, read three times as the product reads it
(`echosam.ef_check`: boxes as given, 5 % larger and smaller; the middle reading when their EFs span more than 4
points), with the companion ``--companion`` at ``--weight`` averaged in (`training.loop_eval.companion_reading`).
The companion changes only how each frame is drawn, never what the memory holds, so each reading is drawn twice
from the same session: with the companion, and without (the session's frames recomposed with it removed); each way
then picks its own middle reading. One JSON line per loop with both ways' Dice (over the whole loop) and EF; an
interrupted run resumes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

WAYS = ("alone", "companion")


def drawn_both_ways(loaded, case, boxes, second) -> dict:
    """{way: full-frame labels} of one reading."""
    from training.loop_eval import STRUCT, segmented_session

    s, region = segmented_session(loaded, case, STRUCT, boxes, second)
    both = {"companion": np.asarray(s.labels).copy()}
    s.results.companion = None
    for t in range(s.n_frames):
        s.results.compose(t)
    both["alone"] = np.asarray(s.labels).copy()
    return both if region is None else {k: region.uncrop(v) for k, v in both.items()}


def run(data: list, out: Path, model: str, companion: str, weight: float) -> None:
    from echosam.cardiac import analyse
    from echosam.checkpoints import load_model
    from echosam.ef_check import READINGS, median_reading, scaled_box
    from echosam.metrics import dice
    from training.loop_eval import LABEL, STRUCT, companion_reading, pending_cases, truth_boxes

    loaded = load_model(model)
    loaded.config = dataclasses.replace(loaded.config, companion={"model": companion, "weight": weight})
    with out.open("a") as f:
        for set_name, name, case in pending_cases(data, out):
            boxes, shape = truth_boxes(case["labels"][0]), case["labels"].shape[1:]
            times = np.arange(len(case["labels"])) / case["fps"]
            second = companion_reading(loaded, case, STRUCT)
            reads = [drawn_both_ways(loaded, case, {k: scaled_box(b, c, shape) for k, b in boxes.items()}, second)
                     for c in READINGS]
            truth = case["labels"]
            row = {"set": set_name, "case": name, "view": case["params"]["view"],
                   "truth_ef": float(analyse(truth, case["spacing"], times).ef_percent)}
            for way in WAYS:
                efs = [float(analyse(r[way], case["spacing"], times, frames=case["frames"], predicted=True).ef_percent)
                       for r in reads]
                i = READINGS.index(median_reading(list(zip(READINGS, efs))))
                lab = reads[i][way]
                row[way] = dict({k: float(dice(lab == LABEL[k], truth == LABEL[k])) for k in STRUCT}, ef=efs[i],
                                efs=efs)
            f.write(json.dumps(row) + "\n")
            f.flush()


def summary(rows: list) -> str:
    from myo_growth_eval import paired, row_groups

    lines = ["| loops | n | LV Dice alone -> companion | MYO | LA | paired MYO change [95 %] | EF MAE alone -> "
             "companion (loops with an EF) | EF bias | paired abs EF error change [95 %] | errors > 10 points |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, sel in row_groups(rows):
        d = {k: {w: np.array([r[w][k] for r in sel]) for w in WAYS} for k in ("lv", "myo", "la")}
        err = {w: np.array([r[w]["ef"] - r["truth_ef"] for r in sel]) for w in WAYS}
        ok = np.isfinite(err["alone"]) & np.isfinite(err["companion"])
        m, lo, hi = paired(d["myo"]["companion"] - d["myo"]["alone"])
        em, elo, ehi = paired(np.abs(err["companion"][ok]) - np.abs(err["alone"][ok]))
        cells = [name, str(len(sel))] + [f"{d[k]['alone'].mean():.3f} -> **{d[k]['companion'].mean():.3f}**"
                                         for k in ("lv", "myo", "la")]
        cells += [f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]",
                  f"{np.abs(err['alone'][ok]).mean():.2f} -> **{np.abs(err['companion'][ok]).mean():.2f}** "
                  f"({int(ok.sum())})",
                  f"{err['alone'][ok].mean():+.2f} -> {err['companion'][ok].mean():+.2f}",
                  f"{em:+.2f} [{elo:+.2f}, {ehi:+.2f}]",
                  f"{int((np.abs(err['alone'][ok]) > 10).sum())} -> {int((np.abs(err['companion'][ok]) > 10).sum())}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from myo_growth_eval import arguments, read

    ap = arguments(__doc__.splitlines()[0], "echosam-sim-memsam-small", argparse.SUPPRESS)
    ap.add_argument("--companion", default="echosam-sim-masam-small", help="the prompt-free model averaged in")
    ap.add_argument("--weight", type=float, default=0.5, help="its weight")
    a = ap.parse_args(argv)
    if not a.summary and not (a.data and a.out):
        ap.error("give --data and --out (or --summary)")
    if not a.summary:
        run(a.data, a.out, a.model, a.companion, a.weight)
    print(summary(read(a.summary or a.out)))
    return 0


if __name__ == "__main__":
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
