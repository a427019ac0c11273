"""What the decoder's mask grid alone costs the LV area: TRUE masks through MemSAM's resolution chain.

    python bench/mask_grid.py --data data/sim/heldout --data data/sim/simus [--size 128 --grid 32]

The bundled MemSAM sees the prompts' zoom box (`echosam.zoom.zoom_box`, frame 0's structures, the model's
margin 0.25) stretched to a ``size`` px square, and its mask decoder draws each structure on a ``grid`` x
``grid`` lattice (4x its 8 x 8 tokens) that is bilinearly enlarged to the input and thresholded. Here the
TRUE LV of every true ED and ES frame takes that road with no model in it: the crop at ``size`` px (the
reference), averaged down to the grid (the best a grid can hold), enlarged back, thresholded at 0.5. The
printed ratio is the area after the round trip over the area before: how much of MemSAM's end-diastolic
shortfall (docs/evaluation.md, "Where MemSAM's EF bias sits") the grid could explain.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "EchoSAMSlicer" / "Logic"))
from echosam.zoom import mask_extent, union_box, zoom_box  # noqa: E402

LV = 1


def round_trip(mask: np.ndarray, size: int, grid: int) -> tuple[float, float]:
    """LV pixels of a cropped mask at ``size`` px, and after the ``grid`` lattice and back."""
    m = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(size, size), mode="bilinear",
                      align_corners=False)
    low = F.adaptive_avg_pool2d(m, grid)
    back = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return float((m > 0.5).sum()), float((back > 0.5).sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, help="a simulated set (folder of case_*.npz)")
    ap.add_argument("--size", type=int, default=128, help="model input side (px)")
    ap.add_argument("--grid", type=int, default=32, help="mask decoder lattice side")
    ap.add_argument("--margin", type=float, default=0.25, help="the model's prompt-zoom margin")
    a = ap.parse_args(argv)
    for root in a.data:
        ratios = {"ED": [], "ES": []}
        for case in sorted(Path(root).glob("case_*.npz")):
            z = np.load(case)
            labels = z["labels"]
            box = union_box([mask_extent(labels[0] == k) for k in (1, 2, 3)])
            x0, y0, x1, y1 = zoom_box(box, labels.shape[1:], a.margin)
            for phase, key in (("ED", "ed"), ("ES", "es")):
                for t in np.atleast_1d(z[key]):
                    before, after = round_trip(labels[t, y0:y1 + 1, x0:x1 + 1] == LV, a.size, a.grid)
                    if before:
                        ratios[phase].append(after / before)
        print(f"{Path(root).name}: " + "; ".join(
            f"{p} {np.mean(r):.3f} (min {np.min(r):.3f}, {len(r)} frames)" for p, r in ratios.items() if r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
