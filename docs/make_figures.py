"""Regenerate the workflow pictures in docs/images from a real run of the demo.

    python docs/make_figures.py

Segments the demo phantom cine with the bundled demo MemSAM (one click on frame 0), applies one
correction, and saves: the cine with its first-frame click, the propagated result at ED and ES,
the corrected frame, and the LV volume curve with ED/ES marked.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from echosam import cardiac  # noqa: E402
from echosam.pipeline import fixed_click, run_demo  # noqa: E402
from echosam.io.overlay import render_overlay  # noqa: E402
from echosam.report import plot_lv_curve  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    demo = run_demo(None)
    ph, s, res = demo["phantom"], demo["session"], demo["result"]
    click = fixed_click(ph.labels[0] == 1)
    overlay = render_overlay(ph.cine, s.labels)
    ed, es = res.ed_frames[0], res.es_frames[0]

    fig, ax = plt.subplots(1, 3, figsize=(10.5, 3.8))
    ax[0].imshow(ph.cine.frames[0], cmap="gray")
    ax[0].plot(*click, "g+", ms=14, mew=2.5)
    ax[0].set_title("1. one click in the LV on frame 0")
    ax[1].imshow(overlay[ed])
    ax[1].set_title(f"2. propagated: ED (frame {ed})")
    ax[2].imshow(overlay[es])
    ax[2].set_title(f"   ES (frame {es}), Dice {demo['dice'][es]:.2f}")
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(OUT / "workflow_propagation.png", dpi=90)
    plt.close(fig)

    # correct a frame with the phantom truth and propagate again: later frames follow the fix
    k = max(1, es - 3)
    s.set_mask(k, "lv", ph.labels[k] == 1)
    s.propagate()
    res2 = cardiac.analyse(s.labels, ph.cine.spacing, ph.cine.frame_times)
    plot_lv_curve(res2, OUT / "workflow_lv_curve.png",
                  title=f"LV volume after one correction (phantom truth: EF {ph.true_ef:.1f} %)")
    print(f"wrote {OUT}/workflow_propagation.png and workflow_lv_curve.png")


if __name__ == "__main__":
    main()
