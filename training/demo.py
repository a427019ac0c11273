"""`make demo`: the product's main job on a realistic simulated screen capture, then on a real cine.

    python -m training.demo --out demo_out

1. A simulated apical four-chamber loop (`training.simulator`, a seed never used in training) is
   rendered as a scanner screen capture (text, depth scale, ECG, markers) and written as an RGB
   ultrasound DICOM WITHOUT an ultrasound-region sequence, so the fan must be found from the pixels.
2. `echosam segment` runs on it with the default model (MemSAM) from one box per structure (LV,
   myocardium, LA) on frame 0, as a user would draw them; then a prompt-free model segments the three.
   The truth is known: mean Dice per structure and the EF error are printed.
3. Where the `pydicom-data` package is installed, the same is done on its real apical SonoSite cine
   (no truth): the EF, ED/ES frames and the overlay video are reported.
Everything is written under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DEMO_SEED = 4242428                       # an A4C loop with lateral dropout and near-field clutter
PROMPT_FREE = "echosam-sim-masam-small"
REAL_LV_BOX = (305, 95, 415, 280)          # drawn once by hand on frame 0 of the pydicom-data cine
# the myocardium and LA on the same frame, drawn by hand (the prompt-free MA-SAM's frame-0 outlines as a guide)
REAL_BOXES = {"lv": REAL_LV_BOX, "myo": (285, 108, 422, 288), "la": (318, 280, 402, 345)}


def _segment(argv: list) -> None:
    import contextlib
    import io

    from echosam.cli import main as echosam_main

    with contextlib.redirect_stdout(io.StringIO()):          # the demo prints its own summary
        code = echosam_main(["-q"] + argv)
    if code:
        raise SystemExit(f"echosam {' '.join(argv)} failed with exit code {code}")


def simulated_case(out: Path) -> tuple:
    from training.loop_eval import truth_boxes
    from training.simulator.scene import sample_params, simulate
    from training.simulator.screen import render_screen, write_dicom

    cine = simulate(sample_params(DEMO_SEED))
    screen = render_screen(cine, seed=DEMO_SEED)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "simulated_a4c_screen.dcm"
    write_dicom(screen, path, with_region=False, seed=DEMO_SEED)
    boxes = {k: tuple(int(v) for v in b) for k, b in truth_boxes(screen.labels[0]).items()}
    return path, screen, cine, boxes


def score(folder: Path, screen, cine) -> dict:
    from echosam.cardiac import analyse
    from echosam.io import read_labels
    from echosam.metrics import dice
    from training.loop_eval import LABEL

    labels, _ = read_labels(folder / "labels.seq.nrrd")
    truth = screen.labels
    per = {}
    for key, lab in LABEL.items():
        if (labels == lab).any():
            per[key] = float(np.mean([dice(labels[t] == lab, truth[t] == lab) for t in range(len(truth))]))
    times = np.arange(len(truth)) / cine.fps
    ef_true = analyse(truth, screen.spacing, times).ef_percent
    report = json.loads((folder / "report.json").read_text())["summary"]
    ef = report.get("ef_percent")
    ef = None if ef is None or not np.isfinite(ef) else float(ef)
    outside = int((labels[:, ~screen.fan] > 0).sum())
    return {"dice": per, "ef": ef, "ef_true": float(ef_true), "outside_fan": outside, "status": report.get("status"),
            "ed": report.get("ed_frames"), "es": report.get("es_frames"), "ed_true": cine.ed_frames,
            "es_true": cine.es_frames}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    from echosam.ef_check import FLAGGED
    from echosam.model_zoo import default_model_name

    out = Path(args.out)
    model = default_model_name()
    dev = ["--device", args.device]
    print(f"EchoSAM demo: models '{model}' and '{PROMPT_FREE}' (small, trained on SIMULATED echoes only; "
          "research software, not for clinical use)")
    path, screen, cine, boxes = simulated_case(out / "input")
    T, H, W, _ = screen.frames.shape
    print(f"1) simulated A4C screen capture: {T} frames, {W}x{H} px RGB, {cine.fps:.0f} fps, no DICOM region "
          f"(the fan is found from the pixels); one box per structure on frame 0: "
          + ", ".join(f"{k.upper()} {b}" for k, b in boxes.items()))
    box_args = [a for k, b in boxes.items() for a in ("--box", f"{k}:" + ",".join(map(str, b)))]
    _segment(["segment", str(path), "-o", str(out / "simulated_memsam"), "--structures", "lv,myo,la"] + box_args + dev)
    r = score(out / "simulated_memsam", screen, cine)
    ef_txt = f"{r['ef']:.1f} % vs true {r['ef_true']:.1f} % (error {r['ef'] - r['ef_true']:+.1f} points)" \
        if r["ef"] is not None else f"not reported ({r['status']}; true {r['ef_true']:.1f} %)"
    if r["status"] == FLAGGED:       # `echosam.ef_check`: boxes 5 % larger/smaller move it
        ef_txt += f" [flagged: {FLAGGED}, see the report]"
    dice_txt = ", ".join(f"{k.upper()} {v:.3f}" for k, v in r["dice"].items())
    print(f"   MemSAM, one box per structure: mean Dice {dice_txt}; EF {ef_txt}; "
          f"ED {r['ed']} (true {r['ed_true']}), ES {r['es']} (true {r['es_true']}); "
          f"labels outside the fan: {r['outside_fan']}")
    _segment(["segment", str(path), "-o", str(out / "simulated_prompt_free"), "--model", PROMPT_FREE,
              "--structures", "lv,myo,la"] + dev)
    r2 = score(out / "simulated_prompt_free", screen, cine)
    dice_txt = ", ".join(f"{k.upper()} {v:.3f}" for k, v in r2["dice"].items())
    ef2 = f"{r2['ef']:.1f} %" if r2["ef"] is not None else "not reported"
    print(f"   prompt-free {PROMPT_FREE}: mean Dice {dice_txt}; EF {ef2} vs true {r2['ef_true']:.1f} %")
    try:
        from pydicom.data import get_testdata_file
        real = get_testdata_file("color3d_jpeg_baseline.dcm")
    except Exception:
        real = None
    if not real:
        print("2) real cine skipped: pip install pydicom-data to add the real SonoSite apical cine")
    else:
        print("2) real SonoSite apical cine (pydicom-data, no truth):")
        runs = (("real_memsam", "MemSAM from a box on frame 0",
                 ["--box", ",".join(map(str, REAL_LV_BOX)), "--structures", "lv"]),
                ("real_prompt_free", f"prompt-free {PROMPT_FREE}",
                 ["--model", PROMPT_FREE, "--structures", "lv,myo,la"]))
        for folder, what, extra in runs:
            _segment(["segment", real, "-o", str(out / folder)] + extra + dev)
            report = json.loads((out / folder / "report.json").read_text())
            rep = report["summary"]
            ef = rep.get("ef_percent")
            ef = None if ef is None or not np.isfinite(ef) else float(ef)
            ef_txt = f"{ef:.1f} %" if ef is not None else f"not reported ({rep.get('status')})"
            if rep.get("status") == FLAGGED:
                ef_txt += f" [flagged: {FLAGGED}]"
            print(f"   {what}: EF {ef_txt}, ED frames {rep.get('ed_frames')}, ES frames {rep.get('es_frames')}; "
                  f"overlay in {out / folder}")
            note = (report.get("info") or {}).get("model_ef_accuracy")
            if ef is not None and note:
                print(f"     ({note})")
    print(f"labels, overlay videos, reports and LV curves written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
