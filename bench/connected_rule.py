"""The connected-region rule (`echosam.consistency`) switched on and off, on the real apical cine of
`pydicom-data` (120 frames, through its fan crop) and on phantoms with exact labels.

    python bench/connected_rule.py [--memsam NAME] [--auto NAME]

Per structure: frames with more than one connected component, frames with a component more than
``--far`` pixels from the structure's largest one (for the myocardium: and from the LV cavity it wraps,
whose two walls are two components when the apex is open), the rule's run time; on phantoms, Dice vs the truth
(the rule must not cost accuracy where there are no stray blobs). Prints one JSON line per setting.
"""
from __future__ import annotations

import argparse
import json
import time


def components(lab, value, far: float, beside=None) -> tuple:
    """(frames with several components, frames with one farther than ``far`` px from the largest one and
    from the ``beside`` label on the same frame: the cavity a wrapping structure's walls border)."""
    import numpy as np
    from scipy import ndimage

    multi = distant = 0
    for t, f in enumerate(lab == value):
        comp, n = ndimage.label(f, structure=np.ones((3, 3), bool))
        if n > 1:
            multi += 1
            main = comp == (int(np.argmax(np.bincount(comp.ravel())[1:])) + 1)
            if beside is not None:
                main = main | (lab[t] == beside)
            dist = ndimage.distance_transform_edt(~main)
            distant += int(any(dist[comp == i].min() > far for i in range(1, n + 1)))
    return multi, distant


def wrapped_label(value: int):
    """The label of the cavity the structure ``value`` wraps (the myocardium: the LV), else None."""
    from echosam.structures import get_structure

    w = get_structure(int(value)).wraps
    return get_structure(w).label if w else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memsam", default="echosam-demo-memsam-tiny")
    ap.add_argument("--auto", default="echosam-demo-medivista-tiny")
    ap.add_argument("--far", type=float, default=20.0, help="pixels from the main component counted as far")
    ap.add_argument("--lv-box", default="305,95,415,280", help="MemSAM's box on frame 0 (full-frame pixels)")
    args = ap.parse_args(argv)

    import numpy as np
    from pydicom.data import get_testdata_file

    from echosam import fan
    from echosam.io import read_cine
    from echosam.phantom import make_phantom
    from echosam.pipeline import fixed_click, load
    from echosam.session import Session

    cine = read_cine(get_testdata_file("color3d_jpeg_baseline.dcm"))
    region, crop = fan.prepare_region(cine)
    box = tuple(float(v) for v in args.lv_box.split(","))
    phantoms = [make_phantom(n_frames=30, seed=s, size=(128, 128)) for s in (424242, 424243)]
    for name in (args.memsam, args.auto):
        loaded = load(name, "cpu")
        keys = ["lv"] if loaded.prompted else None
        for keep in (False, True):
            s = Session(crop, loaded, structures=keys, keep_connected=keep)
            if loaded.prompted:
                s.add_box(0, "lv", region.box_to_crop(box))
            t0 = time.perf_counter()
            lab = region.uncrop(s.segment())
            seconds = time.perf_counter() - t0
            real = {str(v): dict(zip(("multi", "far"), components(lab, v, args.far, wrapped_label(v))))
                    for v in sorted(set(np.unique(lab).tolist()) - {0})}
            dice = []
            for ph in phantoms:
                reg, pc = fan.prepare_region(ph.cine)
                ps = Session(pc, loaded, structures=keys, keep_connected=keep)
                if loaded.prompted:
                    ps.add_points(0, "lv", reg.to_crop_xy([fixed_click(ph.labels[0] == 1)]), [1])
                plab = reg.uncrop(ps.segment())
                for v in ((1,) if loaded.prompted else (1, 2, 3)):
                    t, p = ph.labels == v, plab == v
                    dice.append(round(float(2 * (t & p).sum() / max(t.sum() + p.sum(), 1)), 4))
            print(json.dumps({"model": name, "keep_connected": keep, "real_cine_frames": cine.n_frames,
                              "real_components": real, "segment_s": round(seconds, 2), "phantom_dice": dice}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
