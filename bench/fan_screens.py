"""The fan finder (`echosam.fan`, from the pixels, no DICOM region) on the simulator's screen captures,
where the exact fan and labels are known.

    python bench/fan_screens.py [--ranges outside_dark] [--seeds 940000:940040] [--grey-map sepia] [--json out.json]

Per seed: a loop simulated with the named parameter ranges (`training.simulator.cache.RANGES`) and drawn
as a scanner screen capture (`training.simulator.screen.render_screen`: text, depth scale, ECG, a marker
partly over the fan); the fan found from its pixels is scored against the true fan (Dice), its pixels outside
the true fan are counted (where a label could fall outside the fan), and so are the true labels it leaves out
(a label there cannot be drawn: "labels cut" per frame). ``--grey-map`` shows the B-mode through a scanner's
tinted map, ``--apex-down`` upside down (the fan is found upright, `echosam.fan_pixels.apex_at_bottom`);
``fan_dice_grey_rule`` is the fan found when every tinted pixel counts as coloured (the rule
before `echosam.cine.grey_map_offsets`), in the same run.
A dark display's still, black near field or far field is what the finder cannot see. Prints one row per
seed where labels are cut and a summary line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "EchoSAMSlicer" / "Logic"), str(ROOT)]

import echosam.cine as cine_module  # noqa: E402
from echosam.cine import Cine  # noqa: E402
from echosam.fan import find_region  # noqa: E402
from echosam.fan_pixels import apex_at_bottom  # noqa: E402
from echosam.metrics import dice  # noqa: E402
from training.simulator.cache import RANGES  # noqa: E402
from training.simulator.scene import sample_params, simulate  # noqa: E402
from training.simulator.screen import GREY_MAPS, render_screen  # noqa: E402


def score_seed(seed: int, ranges: str, grey_map: str = "grey", apex_down: bool = False) -> dict:
    sc = render_screen(simulate(sample_params(seed, RANGES[ranges])), seed=seed, grey_map=grey_map)
    if apex_down:          # the capture shown upside down, as apex-down displays show apical views
        sc = dataclasses.replace(sc, frames=np.ascontiguousarray(sc.frames[:, ::-1]),
                                 labels=np.ascontiguousarray(sc.labels[:, ::-1]),
                                 fan=np.ascontiguousarray(sc.fan[::-1]))
    t0 = time.perf_counter()
    region = find_region(Cine.from_array(sc.frames, spacing=sc.spacing, fps=sc.fps, name=f"seed {seed}"), "auto")
    seconds = time.perf_counter() - t0
    found, true = region.mask, sc.fan
    cut = (sc.labels > 0) & ~found[None]
    saved, cine_module.TINT_CHROMA = cine_module.TINT_CHROMA, float("inf")    # the rule before chroma maps
    try:
        grey_rule = find_region(Cine.from_array(sc.frames, spacing=sc.spacing, fps=sc.fps), "auto")
    finally:
        cine_module.TINT_CHROMA = saved
    return {"seed": seed, "source": region.source, "frames": int(len(sc.frames)), "apex_down": apex_at_bottom(found),
            "fan_dice_grey_rule": dice(grey_rule.mask, true), "source_grey_rule": grey_rule.source,
            "fan_dice": dice(found, true),
            "fan_missed": float((true & ~found).sum() / true.sum()), "fan_extra": float((found & ~true).sum() / true.sum()),
            "fan_extra_px": int((found & ~true).sum()),
            "labels_cut_per_frame": float(cut.sum() / len(sc.frames)),
            "labels_cut_share": float(cut.sum() / max((sc.labels > 0).sum(), 1)), "detect_s": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranges", default="outside_dark", choices=sorted(RANGES))
    p.add_argument("--seeds", default="940000:940040", help="first:last (exclusive)")
    p.add_argument("--grey-map", default="grey", choices=sorted(GREY_MAPS),
                   help="the B-mode shown through a scanner's tinted (chroma) grey map")
    p.add_argument("--apex-down", action="store_true", help="the captures shown upside down (apex at the bottom)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    s0, s1 = (int(v) for v in a.seeds.split(":"))
    rows = []
    for seed in range(s0, s1):
        r = score_seed(seed, a.ranges, a.grey_map, a.apex_down)
        rows.append(r)
        if r["labels_cut_share"] > 0.005:
            print(f"seed {seed}: fan Dice {r['fan_dice']:.3f}, labels cut {r['labels_cut_per_frame']:.0f} px/frame "
                  f"({100 * r['labels_cut_share']:.1f} % of the labels)", flush=True)
    d = np.array([r["fan_dice"] for r in rows])
    share = np.array([r["labels_cut_share"] for r in rows])
    old = np.array([r["fan_dice_grey_rule"] for r in rows])
    summary = {"ranges": a.ranges, "seeds": a.seeds, "grey_map": a.grey_map, "apex_down": a.apex_down,
               "found_apex_down": sum(r["apex_down"] for r in rows), "loops": len(rows),
               "fan_dice_median": float(np.median(d)),
               "fan_dice_median_grey_rule": float(np.median(old)), "fan_dice_min_grey_rule": float(old.min()),
               "found_grey_rule": sum(r["source_grey_rule"] == "detected" for r in rows),
               "fan_dice_min": float(d.min()), "loops_with_over_0.5pct_labels_cut": int((share > 0.005).sum()),
               "labels_cut_share_max": float(share.max()), "detected": sum(r["source"] == "detected" for r in rows),
               "loops_with_fan_outside_the_true_fan": sum(r["fan_extra_px"] > 0 for r in rows),
               "fan_extra_px_max": max(r["fan_extra_px"] for r in rows)}
    print(json.dumps(summary))
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "loops": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
