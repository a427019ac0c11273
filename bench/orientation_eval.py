"""How often `echosam.orientation` reads a loop's display the right way round.

Each simulated loop is read twice by the product's rule (``orient(..., "auto")`` on the loop's fan):
as displayed (the training convention: a four-chamber LV on the screen's right) and mirrored left-right
(as some labs display apical views). A loop as displayed that is taken as mirrored is a false flip; a
mirrored loop taken as mirrored is found. One JSON line per loop (resumable); ``--summary`` prints the
table by set and view.

    python bench/orientation_eval.py --data data/sim/draw8 --data data/sim/draw8_dark \
        --out bench/results/orientation_draw8.jsonl
    python bench/orientation_eval.py --summary bench/results/orientation_draw8.jsonl

What a mirrored display costs a model: ``--mirror-copy SRC DST`` writes the set SRC mirrored left-right
(frames, labels, fan) to DST, for ``python -m training.evaluate --protocol loop --data simulated:DST``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_both(case: dict) -> dict:
    """The orientation rule's margin and decision on ``case`` as displayed and mirrored left-right."""
    import numpy as np
    from echosam.cine import Cine
    from echosam.fan import FanRegion
    from echosam.orientation import orient

    out = {}
    for name, flip in (("shown", False), ("mirrored", True)):
        frames = case["frames"][:, :, ::-1] if flip else case["frames"]
        fan = case["fan"][:, ::-1] if flip else case["fan"]
        cine = Cine.from_array(np.ascontiguousarray(frames), spacing=case["spacing"], fps=case["fps"])
        o = orient(FanRegion.from_mask(fan, "user"), cine, "auto").orientation
        out[name] = {"margin": o["margin"], "flipped": o["mirrored"]}
    return out


def mirror_copy(src, dst, limit=None) -> int:
    """The loops of ``src`` (case_*.npz, the first ``limit``) mirrored left-right into ``dst``, with its manifest."""
    import shutil

    import numpy as np

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    paths = sorted(Path(src).glob("case_*.npz"))[:limit]
    for path in paths:
        z = dict(np.load(path, allow_pickle=False))
        for key in ("frames", "labels", "fan"):
            z[key] = np.ascontiguousarray(z[key][..., ::-1])
        np.savez_compressed(dst / path.name, **z)
    if (Path(src) / "manifest.json").exists():
        shutil.copy(Path(src) / "manifest.json", dst / "manifest.json")
    return len(paths)


def summary(path) -> str:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    lines = ["| set | view | loops | displayed loops flipped (false) | mirrored loops flipped back (found) |",
             "|---|---|---|---|---|"]
    groups = sorted({(r["set"], r["view"]) for r in rows}) + [("all", v) for v in ("a4c", "a2c")] + [("all", "all")]
    for s, v in groups:
        g = [r for r in rows if s in ("all", r["set"]) and v in ("all", r["view"])]
        if not g:
            continue
        false = sum(r["shown"]["flipped"] for r in g)
        found = sum(r["mirrored"]["flipped"] for r in g)
        lines.append(f"| {s} | {v} | {len(g)} | {false} ({100 * false / len(g):.0f} %) | "
                     f"{found} ({100 * found / len(g):.0f} %) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from training.loop_eval import pending_cases

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", default=[], help="a folder of simulated case_*.npz (repeat)")
    p.add_argument("--out", help="JSON lines, one per loop; a rerun resumes")
    p.add_argument("--summary", help="print the table of a JSON lines file and stop")
    p.add_argument("--mirror-copy", nargs=2, metavar=("SRC", "DST"), help="write SRC's loops mirrored to DST and stop")
    p.add_argument("--limit", type=int, help="--mirror-copy: the first N loops only")
    a = p.parse_args(argv)
    if a.mirror_copy:
        print(f"{mirror_copy(*a.mirror_copy, limit=a.limit)} loops mirrored into {a.mirror_copy[1]}")
        return 0
    if a.summary:
        print(summary(a.summary))
        return 0
    if not (a.data and a.out):
        p.error("give --data and --out, or --summary")
    with open(a.out, "a") as f:
        for set_name, case_name, case in pending_cases(a.data, Path(a.out)):
            row = {"set": set_name, "case": case_name, "view": case["params"].get("view"), **read_both(case)}
            f.write(json.dumps(row) + "\n")
            f.flush()
    print(summary(a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
