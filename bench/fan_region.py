"""The ultrasound region (`echosam.fan`) on the real apical cine of `pydicom-data`
(``color3d_jpeg_baseline.dcm``: SonoSite, 120 frames, 640 x 480 RGB, JPEG baseline).

    python bench/fan_region.py [--out docs/images]

Finds the fan twice: from the DICOM ultrasound region (the file has one 2D B-mode item) and from
the pixels alone (the region sequence removed), times the detection on all 120 frames, and draws
both outlines over frame 0 (``fan_region_real.png``). Prints one JSON line with the numbers.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "images"))
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (the best is reported)")
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pydicom.data import get_testdata_file

    from echosam import fan
    from echosam.io import read_cine

    t0 = time.perf_counter()
    cine = read_cine(get_testdata_file("color3d_jpeg_baseline.dcm"))
    read_s = time.perf_counter() - t0
    dicom = fan.find_region(cine)
    bare = cine.with_frames(cine.frames)
    bare.metadata.pop("us_regions", None)
    times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        detected = fan.find_region(bare)
        times.append(time.perf_counter() - t0)
    both = dicom.mask & detected.mask
    dice = 2 * both.sum() / (dicom.mask.sum() + detected.mask.sum())
    box = next((r for r in cine.metadata.get("us_regions", []) if r["spatial_format"] == 1), None)
    numbers = {"cine": "color3d_jpeg_baseline.dcm", "frames": cine.n_frames, "size": list(cine.shape[1:][::-1]),
               "dicom_region": [box[k] for k in ("x0", "y0", "x1", "y1")] if box else None,
               "with_dicom_region": dicom.summary(), "from_pixels": detected.summary(),
               "dice_dicom_vs_pixels": round(float(dice), 4), "detect_s_120_frames": round(min(times), 3),
               "read_s": round(read_s, 2)}

    fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
    ax.imshow(cine.frames[0], cmap="gray", vmin=0, vmax=255)
    ax.contour(dicom.mask, levels=[0.5], colors="lime", linewidths=1.2)
    ax.contour(detected.mask, levels=[0.5], colors="red", linewidths=0.8, linestyles="dashed")
    if box:
        ax.add_patch(plt.Rectangle((box["x0"] - 0.5, box["y0"] - 0.5), box["x1"] - box["x0"] + 1,
                                   box["y1"] - box["y0"] + 1, fill=False, ec="cyan", lw=0.8, ls=":"))
    x0, y0, x1, y1 = dicom.bbox
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="yellow", lw=0.8))
    ax.set_title(f"pydicom-data color3d_jpeg_baseline.dcm, frame 0: fan {dicom.fraction:.1%} of the frame\n"
                 f"green: fan inside the DICOM US region (cyan); red dashed: detected from the pixels alone "
                 f"(Dice {dice:.3f}); yellow: model crop {x1 - x0 + 1}x{y1 - y0 + 1}", fontsize=8)
    ax.axis("off")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "fan_region_real.png", bbox_inches="tight")
    print(json.dumps(numbers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
