"""Collect whole-loop evaluation rows (``loops.csv`` from ``training.evaluate --protocol loop``) of
several runs into one markdown document: one table per held-out set, every method and baseline in it.

    python bench/eval_tables.py runs/eval_*_heldout runs/eval_*_simus ... --out docs/evaluation.md
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.loop_eval import table  # noqa: E402

NUMERIC = {"dice_lv", "dice_myo", "dice_la", "dice_lv_es", "hd95_lv_mm", "ef_pred", "ef_true", "ef_error",
           "ed_frame_err", "es_frame_err", "seconds"}


def read_rows(folder: Path) -> list:
    with open(folder / "loops.csv") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in NUMERIC & set(r):
            r[k] = float(r[k]) if r[k] not in ("", "nan") else float("nan")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="Held-out evaluation")
    args = ap.parse_args(argv)
    by_set: dict = {}
    for f in map(Path, args.folders):
        if not (f / "loops.csv").exists():
            print(f"skipping {f}: no loops.csv", file=sys.stderr)
            continue
        key = f.name.split("_", 2)[-1]                 # eval_<model>_<set> -> <set>
        seen = {(r["method"], r["case"]) for r in by_set.get(key, [])}
        by_set.setdefault(key, []).extend(r for r in read_rows(f) if (r["method"], r["case"]) not in seen)
    parts = [f"# {args.title}\n", "Every table compares the methods on the same loops (the cases all of them ran on).\n"]
    for key, rows in by_set.items():
        methods = {r["method"] for r in rows}
        common = set.intersection(*({r["case"] for r in rows if r["method"] == m} for m in methods))
        rows = [r for r in rows if r["case"] in common]
        parts.append(table(rows, title=f"{key} ({len({r['case'] for r in rows})} loops)"))
    Path(args.out).write_text("\n".join(parts))
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
