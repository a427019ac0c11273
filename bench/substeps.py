"""What in-between frames cost (`echosam.session.in_between`): the bundled MemSAM on one cine at 1..4 memory
steps per frame interval, in one run.

    python bench/substeps.py [--model NAME] [--steps 1,2,3,4] [--out bench/results/substeps_cpu.json]

The cine is the real SonoSite apical loop of `pydicom-data` (120 frames, 30 fps; fan crop, one box per
structure on frame 0, as `bench/real_cine.py`) when that package is installed, else a phantom loop. Per step
count: encoding and propagation seconds (`Session.encode`, `Session.propagate`, timed apart), seconds per
real frame, the ratio to one step, and the EF read from the labels (no truth: it shows how far the steps move it).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def load_cine():
    """(name, cine on the model's crop, {structure: box in crop pixels}, region)."""
    from echosam.fan import prepare_region
    from echosam.io import read_cine
    from echosam.phantom import make_phantom
    from training.datasets.clips import mask_box

    try:
        from pydicom.data import get_testdata_file
        path = get_testdata_file("color3d_jpeg_baseline.dcm")
    except Exception:
        path = None
    if path:
        from training.demo import REAL_BOXES
        cine = read_cine(path)
        region, _ = prepare_region(cine, "auto")
        return Path(path).name, cine, dict(REAL_BOXES), region
    ph = make_phantom(n_frames=60, seed=5, size=(160, 160), heart_rate=75)
    boxes = {k: mask_box(ph.labels[0] == v) for k, v in (("lv", 1), ("myo", 2))}
    region, _ = prepare_region(ph.cine, "off")
    return "phantom (pip install pydicom-data for the real cine)", ph.cine, boxes, region


def run(loaded, cine, boxes, region, steps: int) -> dict:
    from echosam.cardiac import analyse
    from echosam.session import Session
    from echosam.zoom import joint_extent, zoom_for

    zoomed = zoom_for(region, loaded, joint_extent(boxes))[0]
    s = Session(zoomed.crop_cine(cine), loaded, structures=list(boxes), substeps=steps)
    for key, box in boxes.items():
        s.add_box(0, key, zoomed.box_to_crop(box))
    t0 = time.perf_counter()
    s.encode()
    t1 = time.perf_counter()
    s.propagate()
    t2 = time.perf_counter()
    labels = zoomed.uncrop(s.labels)
    ef = analyse(labels, cine.spacing, cine.frame_times, frames=cine.frames, predicted=True).ef_percent
    return {"steps": steps, "encode_s": round(t1 - t0, 2), "propagate_s": round(t2 - t1, 2),
            "total_s": round(t2 - t0, 2), "s_per_frame": round((t2 - t0) / cine.n_frames, 3),
            "ef_percent": round(float(ef), 1) if ef == ef else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="echosam-sim-memsam-small")
    ap.add_argument("--steps", default="1,2,3,4")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="bench/results/substeps_cpu.json")
    args = ap.parse_args(argv)
    from echosam.checkpoints import load_model

    loaded = load_model(args.model, device=args.device)
    name, cine, boxes, region = load_cine()
    rows = [run(loaded, cine, boxes, region, int(k)) for k in args.steps.split(",")]
    for r in rows:
        r["ratio_to_1"] = round(r["total_s"] / rows[0]["total_s"], 2)
        print(json.dumps(r))
    out = {"model": args.model, "cine": name, "frames": cine.n_frames, "fps": round(cine.fps, 2),
           "machine": platform.processor() or platform.machine(), "device": args.device, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
