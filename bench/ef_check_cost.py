"""What the EF check costs (`echosam.ef_check`): `echosam segment` on one cine with and without it, in one run.

    python bench/ef_check_cost.py [--model NAME] [--repeat 2] [--out bench/results/ef_check_cost_cpu.json]
    python bench/ef_check_cost.py --option companion --out bench/results/companion_cost_cpu.json

``--option companion`` times the companion (`echosam.companion`) the same way instead, each run one reading.

The cine is the real SonoSite apical loop of `pydicom-data` (120 frames, 30 fps), one box per structure on
frame 0 (`training.demo.REAL_BOXES`), the bundled MemSAM; without that package, a phantom loop. Each setting
runs ``--repeat`` times, alternating, into fresh folders; the best wall time of each is kept, with the ratio
and what the check found (the three EFs and their spread).
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def cine_and_prompts(tmp: Path) -> tuple:
    """(cine path, `Prompts`, structures, what it is)."""
    from echosam.user_prompts import Prompts, StructurePrompt

    try:
        from pydicom.data import get_testdata_file
        path = get_testdata_file("color3d_jpeg_baseline.dcm")
    except Exception:
        path = None
    if path:
        from training.demo import REAL_BOXES
        boxes = dict(REAL_BOXES)
        what = "real SonoSite apical cine (pydicom-data), one box per structure"
    else:
        from echosam.io import write_cine
        from echosam.phantom import make_phantom
        from training.datasets.clips import mask_box
        ph = make_phantom(n_frames=60, seed=5, size=(160, 160), heart_rate=75)
        path = tmp / "phantom.nrrd"
        write_cine(ph.cine, path)
        boxes = {k: mask_box(ph.labels[0] == v) for k, v in (("lv", 1), ("myo", 2))}
        what = "phantom loop (pip install pydicom-data for the real cine)"
    keys = list(boxes)
    prompts = Prompts(box=tuple(boxes[keys[0]]), others={k: StructurePrompt(box=tuple(boxes[k])) for k in keys[1:]})
    return str(path), prompts, keys, what


def main(argv=None) -> int:
    from echosam import pipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="Models.json name or weights file (default: the default model)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    ap.add_argument("--option", default="ef_check", choices=("ef_check", "companion"), help="what to time on and off")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path, prompts, keys, what = cine_and_prompts(tmp)
        loaded = pipeline.load(a.model, "cpu")
        best, check = {True: float("inf"), False: float("inf")}, None
        for i in range(a.repeat):
            for on in (False, True):
                t0 = time.perf_counter()
                opts = {"ef_check": on} if a.option == "ef_check" else {"ef_check": False, "companion": on}
                out = pipeline.segment_cine(path, tmp / f"run{i}_{on}", structures=keys, prompts=prompts,
                                            loaded=loaded, overlay=False, notify=lambda _: None, **opts)
                best[on] = min(best[on], time.perf_counter() - t0)
                check = out["run"].get("ef_check", check)
    from echosam.compute import cpu_model, usable_cores
    result = {"cine": what, "machine": f"{cpu_model()}, {usable_cores()} cores ({platform.machine()})",
              "model": a.model or "default", "option": a.option,
              f"seconds_without_{a.option}": round(best[False], 2), f"seconds_with_{a.option}": round(best[True], 2),
              "ratio": round(best[True] / best[False], 2), "ef_check": check}
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
