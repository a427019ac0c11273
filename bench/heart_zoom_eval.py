"""A prompt-free model with and without its heart zoom (`echosam.heart_zoom`) on simulated loops, paired per loop.

    python bench/heart_zoom_eval.py --model echosam-sim-medivista-small --data data/sim/select_deep \
        --zoom 0.05/1.15/2.0 --zoom 0.1/1.05/1.4 --out runs/heart_zoom.jsonl
    python bench/heart_zoom_eval.py --summary runs/heart_zoom.jsonl       # the numbers again, no model run
    python bench/heart_zoom_eval.py --table runs/heart_zoom.jsonl --way 0.05/1.15/2.0   # one way's evaluation table

Each loop is segmented as `echosam segment` and `training.evaluate` run a prompt-free model (a `Session` on the
loop, `segment_auto`: the connected-region rule, the myocardium's growth), once with the heart zoom off and once
per ``--zoom`` margin/min/max (the model config's ``heart_zoom`` replaced; weights unchanged; margin/max: min 1.05,
as the selection rows of bench/results/heart_zoom_selection.jsonl were run). One JSON line per loop
with each way's `training.loop_eval.score` row (Dice per frame averaged over the loop, EF, ED/ES) and the
magnification used (1: the first reading stood); an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np


def parse_zoom(text: str) -> dict:
    v = [float(x) for x in text.split("/")]
    return {"margin": v[0], "min": 1.05 if len(v) == 2 else v[1], "max": v[-1]}


def run(data: list, out: Path, model: str, zooms: list) -> None:
    from echosam.checkpoints import load_model
    from training.loop_eval import pending_cases, score, segmented_session

    loaded = load_model(model)
    keys = list(loaded.classes)
    base = loaded.config
    with out.open("a") as f:
        for set_name, name, case in pending_cases(data, out):
            row = {"set": set_name, "case": name, "view": case["params"]["view"], "ways": {}, "factor": {}}
            for way in ["off"] + zooms:
                loaded.config = dataclasses.replace(base, heart_zoom={} if way == "off" else parse_zoom(way))
                s, _ = segmented_session(loaded, case, keys, {})
                row["ways"][way] = score(np.asarray(s.labels), case)
                row["factor"][way] = s.auto_zoom.factor if s.auto_zoom else 1.0
            f.write(json.dumps(row) + "\n")
            f.flush()


def summary(rows: list) -> str:
    from myo_growth_eval import paired, row_groups

    ways = [w for w in rows[-1]["ways"] if w != "off" and all(w in r["ways"] for r in rows)]
    lines = ["| zoom (margin/min/max) | loops | n | zoomed (median x) | LV Dice off -> on | MYO | LA | paired MYO change "
             "[95 %] | paired LV change [95 %] | EF MAE off -> on |", "|---|---|---|---|---|---|---|---|---|---|"]
    for way in ways:
        for name, sel in row_groups(rows):
            d = {k: {w: np.array([r["ways"][w][f"dice_{k}"] for r in sel]) for w in ("off", way)}
                 for k in ("lv", "myo", "la")}
            err = {w: np.array([r["ways"][w]["ef_error"] for r in sel], float) for w in ("off", way)}
            ok = np.isfinite(err["off"]) & np.isfinite(err[way])
            f = np.array([r["factor"][way] for r in sel])
            m, lo, hi = paired(d["myo"][way] - d["myo"]["off"])
            lm, llo, lhi = paired(d["lv"][way] - d["lv"]["off"])
            zoomed = f[f > 1]
            cells = [way, name, str(len(sel)), f"{len(zoomed)} (x{np.median(zoomed) if len(zoomed) else 1:.2f})"]
            cells += [f"{d[k]['off'].mean():.3f} -> **{d[k][way].mean():.3f}**" for k in ("lv", "myo", "la")]
            cells += [f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]", f"{lm:+.4f} [{llo:+.4f}, {lhi:+.4f}]",
                      f"{np.abs(err['off'][ok]).mean():.2f} -> {np.abs(err[way][ok]).mean():.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def way_table(rows: list, way: str, model: str) -> str:
    """`training.loop_eval.table` of one way's rows (as `training.evaluate` prints them)."""
    from training.loop_eval import table

    return table([dict(r["ways"][way], method=f"{model} ({way})", view=r["view"], case=r["case"]) for r in rows])


def main(argv=None) -> int:
    from myo_growth_eval import arguments, read

    ap = arguments(__doc__.splitlines()[0], "echosam-sim-medivista-small", argparse.SUPPRESS)
    ap.add_argument("--zoom", action="append", help="margin/min/max of a heart zoom to compare with none "
                    "(0.05/1.15/2.0)")
    ap.add_argument("--table", type=Path, help="print the evaluation table of an earlier run's --way and stop")
    ap.add_argument("--way", default="off", help="with --table: off or a --zoom as run")
    a = ap.parse_args(argv)
    if a.table:
        print(way_table(read(a.table), a.way, a.model))
        return 0
    if not a.summary and not (a.data and a.out):
        ap.error("give --data and --out (or --summary / --table)")
    if not a.summary:
        run(a.data, a.out, a.model, a.zoom or ["0.05/1.15/2.0"])
    print(summary(read(a.summary or a.out)))
    return 0


if __name__ == "__main__":
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
