"""The real apical cine of the `pydicom-data` package (SonoSite, 120 frames, RGB, JPEG, no labels):
segment it as a user would and check what can be checked without truth.

    python bench/real_cine.py [--memsam NAME_OR_PATH] [--auto NAME_OR_PATH ...] [--out docs/images]

- MemSAM from one box around the LV on frame 0 (full-frame pixels, drawn by hand once on this cine), MemSAM
  from one box per structure (LV, myocardium, LA, also by hand), and each prompt-free model with no prompt;
  all through the ultrasound-region crop (`echosam.fan`). MemSAM reads the loop three times, as `echosam
  segment` does (the boxes as drawn, 5 % larger and 5 % smaller; the reading with the middle EF is shown and
  checked, `echosam.ef_check`); ``--one-reading``: the boxes as drawn only.
- Checks per method: no label outside the fan on any frame; an LV on every frame, with its centroid
  inside the hand-drawn heart box (on the heart, not on the screen text); LV area in a plausible range
  (5-60 cm^2 for an apical view); EF between 30 and 75 %; the ED/ES frames.
- Writes ``real_cine.png`` (ED and ES overlays + LV area curves) and ``real_cine.json``.
This cine is a check of realism, never training data.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# x0, y0, x1, y1 on frame 0 (diastole: the mitral valve is open): the LV box, and one box per structure
from training.demo import REAL_BOXES, REAL_LV_BOX as LV_BOX
HEART_BOX = (230, 60, 470, 400)       # where the heart is on this cine (screen text lies outside it)


def segment(cine, region_cine, region, loaded, boxes=None, second=None):
    """(labels on the full frame, the region the model saw): a prompt-zoomed MemSAM sees the crop around its
    boxes ({structure: box}, full-frame pixels; it segments just those structures), with its companion ``second``
    (`echosam.companion.FanReading`, None: alone) as `echosam segment` runs it."""
    from echosam.session import Session
    from echosam.zoom import joint_extent, zoom_for

    zoomed = zoom_for(region, loaded, joint_extent(boxes))[0] if loaded.prompted else region
    if zoomed is not region:
        region, region_cine = zoomed, zoomed.crop_cine(cine)
    s = Session(region_cine, loaded, structures=list(boxes) if loaded.prompted else ["lv", "myo", "la"],
                companion=second.on(region) if second is not None and loaded.prompted else None)
    if s.prompted:
        for key, box in boxes.items():
            s.add_box(0, key, region.box_to_crop(box))
        s.propagate()
    else:
        s.segment_auto()
    return region.uncrop(np.asarray(s.labels)), region


def check(labels, cine, region) -> dict:
    from echosam.cardiac import analyse

    res = analyse(labels, cine.spacing, cine.frame_times, frames=cine.frames, predicted=True)
    lv = labels == 1
    present = lv.reshape(len(lv), -1).any(1)
    cy = np.array([np.nonzero(f)[0].mean() if f.any() else np.nan for f in lv])
    cx = np.array([np.nonzero(f)[1].mean() if f.any() else np.nan for f in lv])
    x0, y0, x1, y1 = HEART_BOX
    on_heart = present & (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
    area_cm2 = lv.reshape(len(lv), -1).sum(1) * cine.spacing[0] * cine.spacing[1] / 100.0
    outside = int((labels[:, ~region.mask] > 0).sum()) if region.mask is not None else 0
    frames_with = {k: int((labels == v).reshape(len(labels), -1).any(1).sum()) for k, v in (("myo", 2), ("la", 3))}
    dark = lv_darker_than_its_rim(labels, cine.frames)
    ef = float(res.ef_percent)
    num = lambda x: round(float(x), 1) if np.isfinite(x) else None      # JSON has no NaN
    return {"ef_percent": num(ef), "edv_ml": num(res.edv_ml), "esv_ml": num(res.esv_ml),
            "ed_frames": list(map(int, res.ed_frames)), "es_frames": list(map(int, res.es_frames)),
            "status": res.status, "labels_outside_fan": outside, "frames_with_lv": int(present.sum()),
            "frames_with_myo": frames_with["myo"], "frames_with_la": frames_with["la"],
            "frames_lv_on_heart": int(on_heart.sum()), "n_frames": int(len(lv)),
            "lv_area_cm2_range": [round(float(area_cm2.min()), 1), round(float(area_cm2.max()), 1)],
            "frames_lv_darker_than_rim": int(dark.sum()),
            "pass": {"no_label_outside_fan": outside == 0, "lv_on_heart_every_frame": bool(on_heart.all()),
                     "area_plausible": bool(area_cm2.min() >= 5 and area_cm2.max() <= 60),
                     "ef_30_75": bool(np.isfinite(ef) and 30 <= ef <= 75),
                     "lv_is_a_cavity_every_frame": bool(dark.all())}}, area_cm2, res


def lv_darker_than_its_rim(labels, frames, rim_px: int = 6, ratio: float = 0.6) -> np.ndarray:
    """Per frame: is the LV label a cavity? Blood is dark and the wall around it bright, so the LV's mean
    grey must be well below that of a rim just outside it. A check that needs no truth and catches a
    label drawn on the wrong structure (the myocardium, or tissue near the valve)."""
    from scipy import ndimage

    out = np.zeros(len(labels), bool)
    for t, lab in enumerate(labels):
        lv = lab == 1
        if not lv.any():
            continue
        rim = ndimage.binary_dilation(lv, iterations=rim_px) & ~lv
        out[t] = frames[t][lv].mean() < ratio * frames[t][rim].mean()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memsam", default=None, help="MemSAM model (default: the registry default)")
    ap.add_argument("--auto", action="append", default=None, help="prompt-free model(s)")
    ap.add_argument("--out", default="docs/images")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    ap.add_argument("--one-reading", action="store_true", help="MemSAM from the boxes as drawn only")
    args = ap.parse_args(argv)
    try:
        from pydicom.data import get_testdata_file
        path = get_testdata_file("color3d_jpeg_baseline.dcm")
    except Exception:
        path = None
    if not path:
        print("pydicom-data is not installed (pip install pydicom-data): no real cine to check", file=sys.stderr)
        return 0
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from echosam.checkpoints import load_model
    from echosam.companion import read_fan
    from echosam.ef_check import read_three, scaled_box
    from echosam.fan import prepare_region
    from echosam.io import read_cine
    from echosam.model_zoo import default_model_name

    from echosam.device import resolve_device
    args.device = resolve_device(args.device)
    cine = read_cine(path)
    region, rc = prepare_region(cine, "auto")
    methods = {}
    mem = args.memsam or default_model_name()
    memsam = load_model(mem, device=args.device)
    second = read_fan(memsam, region, rc, ["lv", "myo", "la"], args.device, notify=print)   # None: it asks none
    methods[f"{Path(mem).stem} (box on frame 0)"] = (memsam, {"lv": LV_BOX})
    methods[f"{Path(mem).stem} (box per structure on frame 0)"] = (memsam, dict(REAL_BOXES))
    for m in args.auto or []:
        methods[f"{Path(m).stem} (prompt-free)"] = (load_model(m, device=args.device), None)
    report = {"cine": Path(path).name, "frames": cine.n_frames, "region": region.summary(), "lv_box_frame0": LV_BOX,
              "memsam_companion": second.on(region).state()[0] if second is not None else None,
              "boxes_frame0": {k: list(b) for k, b in REAL_BOXES.items()},
              "methods": {}}
    fig, ax = plt.subplots(len(methods), 3, figsize=(13, 3.6 * len(methods)), squeeze=False)
    for i, (name, (loaded, boxes)) in enumerate(methods.items()):
        labels, seen = segment(cine, rc, region, loaded, boxes, second)
        three = None
        if loaded.prompted and not args.one_reading:
            (labels, seen), three = read_three(
                (labels, seen), lambda c: segment(cine, rc, region, loaded,
                                                  {k: scaled_box(b, c, cine.shape[1:]) for k, b in boxes.items()},
                                                  second),
                lambda r: check(r[0], cine, region)[2].ef_percent)
        summary, area, _ = check(labels, cine, region)
        summary["zoom"] = seen.zoom
        if three is not None:
            efs = [three.ef_percent, *three.variant_ef_percent]
            summary["readings_ef_percent"] = {f"{100 * c:+.0f} %": round(float(v), 1) if np.isfinite(v) else None
                                              for c, v in zip([0.0, *three.changes], efs)}
            summary["shown_box_change"] = three.reported_change
        report["methods"][name] = summary
        print(name, json.dumps(summary))
        ed = summary["ed_frames"][0] if summary["ed_frames"] else int(np.argmax(area))
        es = summary["es_frames"][0] if summary["es_frames"] else int(np.argmin(area))
        for j, (t, what) in enumerate(((ed, "ED"), (es, "ES"))):
            a = ax[i, j]
            a.imshow(cine.frames[t], cmap="gray")
            for lab, col in ((2, "dodgerblue"), (3, "lime"), (1, "red")):   # LV last: its edge on top of the wall's inner edge
                if (labels[t] == lab).any():
                    a.contour(labels[t] == lab, levels=[0.5], colors=col, linewidths=1)
            if region.mask is not None:
                a.contour(region.mask, levels=[0.5], colors="yellow", linewidths=0.6, linestyles="dotted")
            if seen.zoom:                                 # the crop a prompt-zoomed model saw
                x0, y0, x1, y1 = seen.zoom["box"]
                a.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color="cyan", lw=0.6, ls="--")
            a.set_title(f"{name}\n{what}: frame {t}", fontsize=8)
            a.axis("off")
        a = ax[i, 2]
        a.plot(cine.frame_times, area, "r-")
        for t in summary["ed_frames"]:
            a.axvline(cine.frame_times[t], color="k", ls="--", lw=0.6)
        for t in summary["es_frames"]:
            a.axvline(cine.frame_times[t], color="b", ls=":", lw=0.8)
        a.set_xlabel("time (s)")
        a.set_ylabel("LV area (cm²)")
        a.set_title(f"EF {summary['ef_percent']} % (ED dashed, ES dotted)", fontsize=8)
    plt.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "real_cine.png", dpi=80)
    (out / "real_cine.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out / 'real_cine.png'} and {out / 'real_cine.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
