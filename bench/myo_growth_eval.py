"""The myocardium drawn past the threshold (`echosam.hysteresis`) on simulated loops, paired per loop.

    python bench/myo_growth_eval.py --data data/sim/draw7 --data data/sim/draw7_dark --out runs/myo_growth.jsonl
    python bench/myo_growth_eval.py --summary runs/myo_growth.jsonl          # the numbers again, no model run

Each loop: the model from the TRUE frame-0 box of each structure, read three times as the product reads it
(`echosam.ef_check`: boxes as given, 5 % larger and smaller; the result is the middle reading when the EFs span
more than 4 points). The chosen reading's labels are scored as drawn at the threshold alone and with the
myocardium grown to ``--low`` (`grow_into_free` on the session's own crop pixels, as `Results.compose` applies
it), and, for comparison, with the myocardium redrawn by a majority vote of the three readings on the chosen
reading's background and myocardium pixels (not in the product). One JSON line per loop, appended (an
interrupted run resumes). The model must not carry ``grow_thresholds`` itself (the growth is applied here);
a bundled file that does is read with them switched off. Dice over each whole loop.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

MYO = 2


def reading(loaded, case, boxes, low):
    """(labels, labels with the myocardium grown) of one reading, full-frame."""
    import torch
    from echosam.hysteresis import grow_into_free
    from training.loop_eval import STRUCT, segmented_session

    s, region = segmented_session(loaded, case, STRUCT, boxes)
    lab = np.asarray(s.labels).copy()
    grown = lab.copy()
    for t, lg in s.results.logits["myo"].items():
        grow_into_free(grown[t], MYO, torch.sigmoid(s.transform.to_frame(lg)).numpy(), low)
    return (lab, grown) if region is None else (region.uncrop(lab), region.uncrop(grown))


def run(data: list, model: str, out: Path, low: float) -> None:
    from echosam.cardiac import analyse
    from echosam.checkpoints import load_model
    from echosam.ef_check import READINGS, median_reading, scaled_box
    from echosam.metrics import dice
    from training.loop_eval import STRUCT, pending_cases, truth_boxes

    loaded = load_model(model)
    loaded.config = dataclasses.replace(loaded.config, grow_thresholds={})
    with out.open("a") as f:
        for set_name, name, case in pending_cases(data, out):
            boxes, shape = truth_boxes(case["labels"][0]), case["labels"].shape[1:]
            times = np.arange(len(case["labels"])) / case["fps"]
            rs = [reading(loaded, case, {k: scaled_box(b, c, shape) for k, b in boxes.items()}, low)
                  for c in READINGS]
            efs = [float(analyse(lab, case["spacing"], times, frames=case["frames"], predicted=True).ef_percent)
                   for lab, _ in rs]
            chosen = READINGS.index(median_reading(list(zip(READINGS, efs))))
            truth = case["labels"]
            lab, grown = rs[chosen]
            vote = (np.sum([x == MYO for x, _ in rs], 0) >= 2) & ((lab == 0) | (lab == MYO))
            f.write(json.dumps({
                "set": set_name, "case": name, "view": case["params"]["view"], "chosen": chosen,
                "efs": efs, "truth": float(analyse(truth, case["spacing"], times).ef_percent),
                "base": {k: float(dice(lab == i, truth == i)) for i, k in enumerate(STRUCT, 1)},
                "grown": {k: float(dice(grown == i, truth == i)) for i, k in enumerate(STRUCT, 1)},
                "vote_myo": float(dice(vote, truth == MYO))}) + "\n")
            f.flush()


def read(path: Path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def paired(d: np.ndarray, n: int = 2000) -> tuple:
    rng = np.random.default_rng(0)
    means = [rng.choice(d, len(d)).mean() for _ in range(n)]
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def row_groups(rows: list) -> list:
    """[(name, its rows)] of a bench's JSON rows: each set, each view, then all of them; empty groups left out."""
    keys = [("set", s) for s in sorted({r["set"] for r in rows})] + [("view", v) for v in ("a4c", "a2c")]
    groups = [(value, [r for r in rows if r[key] == value]) for key, value in keys] + [("all", list(rows))]
    return [(name, sel) for name, sel in groups if sel]


def summary(rows: list) -> str:
    lines = ["| loops | n | MYO as drawn | grown | paired change [95 %] | loops better | vote of three (not in the "
             "product) | LV / LA Dice (unchanged) |", "|---|---|---|---|---|---|---|---|"]
    for name, sel in row_groups(rows):
        lines.append(table_row([name], sel, [r["grown"]["myo"] for r in sel],
                               [f"{np.mean([r['vote_myo'] for r in sel]):.3f}"]))
    return "\n".join(lines)


def table_row(first: list, rows: list, grown: list, extra: list = ()) -> str:
    """One markdown row over ``rows``: the ``first`` cells, loops, MYO as drawn (``base``) and ``grown``, the
    paired change with its interval, loops better, the ``extra`` cells, LV / LA Dice."""
    b, g = np.array([r["base"]["myo"] for r in rows]), np.array(grown)
    m, lo, hi = paired(g - b)
    cells = [*first, str(len(rows)), f"{b.mean():.3f}", f"**{g.mean():.3f}**", f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]",
             str(int((g > b).sum())), *extra,
             f"{np.mean([r['base']['lv'] for r in rows]):.3f} / {np.mean([r['base']['la'] for r in rows]):.3f}"]
    return "| " + " | ".join(cells) + " |"


def arguments(description: str, model: str, low_help: str) -> argparse.ArgumentParser:
    """The options both growth benches take."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", action="append", default=[], help="a simulated set (folder of case_*.npz)")
    ap.add_argument("--model", default=model)
    ap.add_argument("--out", type=Path, help="JSON lines to append to")
    ap.add_argument("--summary", type=Path, help="print the table of an earlier run and stop")
    ap.add_argument("--low", type=float, action="append", help=low_help)
    return ap


def main(argv=None) -> int:
    ap = arguments(__doc__.splitlines()[0], "echosam-sim-memsam-small", "the myocardium's lower threshold (0.3)")
    a = ap.parse_args(argv)
    if a.summary:
        print(summary(read(a.summary)))
        return 0
    if not (a.data and a.out):
        ap.error("give --data and --out (or --summary)")
    run(a.data, a.model, a.out, (a.low or [0.3])[-1])
    print(summary(read(a.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
