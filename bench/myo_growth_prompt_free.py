"""The prompt-free models' myocardium grown past the argmax (`echosam.hysteresis`) on simulated loops, paired.

    python bench/myo_growth_prompt_free.py --model echosam-sim-masam-small --data data/sim/draw7 --out runs/pf.jsonl
    python bench/myo_growth_prompt_free.py --summary runs/pf.jsonl

Each loop: the model on the loop's fan crop, labels by argmax and the connected-region rule, as `Session.segment_auto`
draws them without growth; then the myocardium grown into background pixels connected to it where its softmax
probability passes each ``--low`` (as `auto_labels` grows it). One JSON line per loop with the LV / MYO / LA Dice as
drawn and the MYO Dice grown (LV and LA are checked to be unchanged); appended, an interrupted run resumes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def run(data: list, model: str, out: Path, lows: list) -> None:
    import torch
    from echosam.checkpoints import load_model
    from echosam.cine import Cine, grey_0_255
    from echosam.consistency import keep_connected_labels
    from echosam.fan import FanRegion
    from echosam.hysteresis import grow_into_free
    from echosam.metrics import dice
    from echosam.models.fast import inference_context
    from echosam.session.transforms import FrameTransform
    from training.loop_eval import pending_cases

    loaded = load_model(model)
    keys = list(loaded.classes)
    with out.open("a") as f:
        for set_name, name, case in pending_cases(data, out):
            cine = Cine.from_array(case["frames"], spacing=case["spacing"], fps=case["fps"], name=name)
            fan = FanRegion.from_mask(case["fan"], "user")
            grey = grey_0_255(fan.crop_cine(cine).frames)
            tr = FrameTransform(*grey.shape[1:], loaded.config.sam.img_size)
            with inference_context(torch.device("cpu"), "auto", width=loaded.config.sam.embed_dim):
                probs = loaded.model.segment_video(loaded.model.prepare_frames(torch.from_numpy(grey)))
                p = np.stack([tr.to_frame(probs[t]).float().numpy() for t in range(len(grey))])
            base = keep_connected_labels(p.argmax(1).astype(np.uint8), keys)
            truth = case["labels"]

            def score(lab):
                full = fan.uncrop(lab)
                return {k: float(dice(full == i, truth == i)) for i, k in enumerate(keys, 1)}

            row = {"set": set_name, "case": name, "view": case["params"]["view"], "base": score(base), "grown": {}}
            for low in lows:
                grown = base.copy()
                for t in range(len(grown)):
                    grow_into_free(grown[t], keys.index("myo") + 1, p[t, keys.index("myo") + 1], low)
                s = score(grown)
                assert s["lv"] == row["base"]["lv"] and s["la"] == row["base"]["la"], "growth changed a cavity"
                row["grown"][str(low)] = s["myo"]
            f.write(json.dumps(row) + "\n")
            f.flush()


def summary(rows: list) -> str:
    from myo_growth_eval import table_row

    lines = ["| loops | low | n | MYO as drawn | grown | paired change [95 %] | loops better | LV / LA Dice |",
             "|---|---|---|---|---|---|---|---|"]
    sets = sorted({r["set"] for r in rows}) + ["all"]
    for low in sorted({k for r in rows for k in r["grown"]}, reverse=True):
        for name in sets:
            sel = [r for r in rows if name in ("all", r["set"])]
            lines.append(table_row([name, low], sel, [r["grown"][low] for r in sel]))
    return "\n".join(lines)


def main(argv=None) -> int:
    from myo_growth_eval import arguments

    ap = arguments(__doc__.splitlines()[0], "echosam-sim-masam-small", "lower threshold(s) of the myocardium (0.4)")
    a = ap.parse_args(argv)
    if a.summary:
        print(summary([json.loads(x) for x in a.summary.read_text().splitlines() if x.strip()]))
        return 0
    if not (a.data and a.out):
        ap.error("give --data and --out (or --summary)")
    run(a.data, a.model, a.out, a.low or [0.4])
    print(summary([json.loads(x) for x in a.out.read_text().splitlines() if x.strip()]))
    return 0


if __name__ == "__main__":
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
