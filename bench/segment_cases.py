"""Simulated cases through `echosam segment`, as a user runs it: each case written as a grey NRRD (the fan
found from its pixels), one LV box on frame 0 with the default model, then a prompt-free model on the whole
loop; scored against the truth beside the frame-0 box copied and Otsu inside it.

    python bench/segment_cases.py data/foreign --out /tmp/segment_foreign
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.demo import _segment  # noqa: E402
from training.loop_eval import baseline_box, baseline_otsu, load_case, score, truth_boxes  # noqa: E402


def one_case(path: Path, out: Path, prompt_free: str) -> dict:
    from echosam.cine import Cine
    from echosam.io import read_labels, write_cine

    c = load_case(path)
    d = out / c["name"]
    d.mkdir(parents=True, exist_ok=True)
    write_cine(Cine.from_array(c["frames"], spacing=c["spacing"], fps=c["fps"], name=c["name"]), d / "in.nrrd")
    box = truth_boxes(c["labels"][0])["lv"]
    row = {"case": c["name"]}
    lv_only, three = ("dice_lv", "dice_lv_es", "ef_error"), ("dice_lv", "dice_lv_es", "dice_myo", "dice_la", "ef_error")
    runs = (("memsam_lv_box", ["--box", "lv:" + ",".join(str(int(v)) for v in box)], lv_only),
            ("prompt_free", ["--model", prompt_free, "--structures", "lv,myo,la"], three))
    for name, args, keys in runs:
        _segment(["segment", str(d / "in.nrrd"), "-o", str(d / name)] + args)
        labels, _ = read_labels(d / name / "labels.seq.nrrd")
        s = score(labels, c)
        row[name] = {k: round(s[k], 3) for k in keys}
        row[name]["outside_fan"] = int((labels[:, ~c["fan"]] > 0).sum()) if c["fan"] is not None else None
    for name, fn in (("box_copy", baseline_box), ("otsu_in_box", baseline_otsu)):
        s = score(fn(c, {"lv": box}), c)
        row[name] = {k: round(s[k], 3) for k in ("dice_lv", "dice_lv_es")}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="a folder of case_*.npz")
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt-free", default="echosam-sim-masam-small")
    a = ap.parse_args(argv)
    rows = [one_case(p, Path(a.out), a.prompt_free) for p in sorted(Path(a.data).glob("case_*.npz"))]
    for r in rows:
        print(json.dumps(r))
    for name in ("memsam_lv_box", "prompt_free", "box_copy", "otsu_in_box"):
        keys = rows[0][name].keys()
        mean = {k: round(float(np.nanmean([r[name][k] for r in rows])), 3) for k in keys if k != "outside_fan"}
        if "ef_error" in keys:
            mean["ef_mae"] = round(float(np.mean([abs(r[name]["ef_error"]) for r in rows])), 2)
            mean["outside_fan"] = sum(r[name]["outside_fan"] or 0 for r in rows)
        print(name, json.dumps(mean))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
