"""The three readings of `echosam.ef_check` on simulated loops: how well the check separates wrong EFs, and
what the middle reading (the product's result) gains over the boxes as given.

    python bench/ef_check_eval.py --data data/sim/val3 --data data/sim/simus_sel2 --out runs/ef_check_sel.jsonl
    python bench/ef_check_eval.py --summary runs/ef_check_sel.jsonl        # the numbers again, no model run

Each loop of each set: the model from the TRUE frame-0 box of each structure (as `training.evaluate
--protocol loop --one-reading`), then with every box `BOX_CHANGE` larger and smaller per side; one JSON line
per loop (true EF, the three EFs as scored, the three as the product computes them to choose the middle one,
and each reading's Dice per structure over the whole loop), appended, so an interrupted run resumes where it
stopped. The summary: EF MAE of the boxes as given, the correlation of each loop's spread with its EF error,
and at the check's `MAX_SPREAD` how many loops are flagged, their mean EF error against the rest's, how many
errors over 10 points they hold; then the middle reading (`echosam.ef_check.median_reading`): its EF MAE, bias,
errors over 10, Dice, and its per-loop |EF error| minus that of the boxes as given with a 95 % bootstrap
interval (a paired comparison: the same loops, the same model).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def run(data: list, model: str, out: Path) -> None:
    from echosam.cardiac import analyse
    from echosam.metrics import dice
    from echosam.checkpoints import load_model
    from echosam.ef_check import READINGS, scaled_box
    from training.loop_eval import STRUCT, one_reading, pending_cases, truth_boxes

    loaded = load_model(model)
    with out.open("a") as f:
        for set_name, name, case in pending_cases(data, out):
            boxes = truth_boxes(case["labels"][0])
            times = np.arange(len(case["labels"])) / case["fps"]
            efs, product, dices = [], [], {k: [] for k in STRUCT}
            shape = case["labels"].shape[1:]
            for change in READINGS:     # as the product reads it (clipped boxes)
                pred = one_reading(loaded, case, STRUCT, {k: scaled_box(b, change, shape) for k, b in boxes.items()})
                efs.append(float(analyse(pred, case["spacing"], times).ef_percent))
                product.append(float(analyse(pred, case["spacing"], times, frames=case["frames"],
                                             predicted=True).ef_percent))     # as the product chooses
                for i, k in enumerate(STRUCT, 1):
                    dices[k].append(float(dice(pred == i, case["labels"] == i)))
            truth = float(analyse(case["labels"], case["spacing"], times).ef_percent)
            f.write(json.dumps({"set": set_name, "case": name, "view": case["params"]["view"],
                                "truth": truth, "efs": efs, "efs_product": product, "dice": dices}) + "\n")
            f.flush()


def read(path: Path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def summary(rows: list, max_spread: float) -> dict:
    """The check as `echosam.ef_check.EFCheck` decides it, over the loops with a true and a predicted EF."""
    from echosam.ef_check import EFCheck

    rows = [r for r in rows if np.isfinite(r["truth"]) and np.isfinite(r["efs"][0])]
    err = np.array([r["efs"][0] - r["truth"] for r in rows])
    checks = [EFCheck(r["efs"][0], r["efs"][1:], max_spread=max_spread) for r in rows]
    spread = np.array([c.spread for c in checks])
    held = np.array([c.stable is False for c in checks], bool)
    big = np.abs(err) > 10
    mean = lambda x: round(float(np.mean(x)), 2) if len(x) else None      # noqa: E731
    both = np.isfinite(spread)
    corr = np.corrcoef(spread[both], np.abs(err[both]))[0, 1] if both.sum() > 2 else float("nan")
    return {"loops": len(rows), "ef_mae": mean(np.abs(err)), "ef_bias": mean(err),
            "corr_spread_abs_error": None if not np.isfinite(corr) else round(float(corr), 2),
            "max_spread": max_spread, "flagged": int(held.sum()), "flagged_share": mean(held),
            "flagged_for_no_ef": int(sum(c.stable is False and not all(np.isfinite(c.variant_ef_percent))
                                         for c in checks)),
            "ef_mae_flagged": mean(np.abs(err[held])), "ef_mae_rest": mean(np.abs(err[~held])),
            "ef_bias_rest": mean(err[~held]), "errors_over_10": int(big.sum()),
            "errors_over_10_flagged": int((big & held).sum()), **middle_reading(rows)}


def middle_reading(rows: list, seed: int = 0, draws: int = 4000) -> dict:
    """The middle reading against the boxes as given, on the rows that record what the product chooses by."""
    from echosam.ef_check import READINGS, median_reading

    rows = [r for r in rows if "efs_product" in r]
    if not rows:
        return {}
    changes = list(READINGS)
    pick = [changes.index(median_reading(list(zip(changes, r["efs_product"])))) for r in rows]
    truth = np.array([r["truth"] for r in rows])
    given, middle = np.array([r["efs"][0] for r in rows]), np.array([r["efs"][i] for r, i in zip(rows, pick)])
    ok = np.isfinite(middle)
    err = middle[ok] - truth[ok]
    diff = (np.abs(middle - truth) - np.abs(given - truth))[ok]
    rng = np.random.default_rng(seed)
    boot = [float(rng.choice(diff, len(diff)).mean()) for _ in range(draws)]
    out = {"middle_ef_mae": round(float(np.abs(err).mean()), 2), "middle_ef_bias": round(float(err.mean()), 2),
           "middle_errors_over_10": int((np.abs(err) > 10).sum()),
           "middle_minus_given_abs_error": round(float(diff.mean()), 3),
           "middle_minus_given_95": [round(float(v), 3) for v in np.percentile(boot, [2.5, 97.5])],
           "middle_reading_counts": {"given": pick.count(0), "larger": pick.count(1), "smaller": pick.count(2)}}
    if "dice" in rows[0]:
        for k in rows[0]["dice"]:
            out[f"dice_{k}_given"] = round(float(np.mean([r["dice"][k][0] for r in rows])), 4)
            out[f"dice_{k}_middle"] = round(float(np.mean([r["dice"][k][i] for r, i in zip(rows, pick)])), 4)
    return out


def main(argv=None) -> int:
    from echosam.ef_check import MAX_SPREAD

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", default=[], help="a simulated set (folder of case_*.npz)")
    ap.add_argument("--model", default="echosam-sim-memsam-small")
    ap.add_argument("--out", help="per-loop JSON lines (appended; resumed)")
    ap.add_argument("--summary", help="summarise this JSON-lines file only")
    ap.add_argument("--max-spread", type=float, default=MAX_SPREAD)
    a = ap.parse_args(argv)
    path = Path(a.summary or a.out or "")
    if not a.summary:
        if not (a.data and a.out):
            ap.error("give --data and --out, or --summary FILE")
        run(a.data, a.model, path)
    rows = read(path)
    print(json.dumps({"all": summary(rows, a.max_spread),
                      **{s: summary([r for r in rows if r["set"] == s], a.max_spread)
                         for s in dict.fromkeys(r["set"] for r in rows)}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
