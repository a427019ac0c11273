"""Whole-loop evaluation on simulated cines, as a user runs the product, next to simple baselines.

Each held-out case (``case_*.npz`` of `training.simulator`: the fan's bounding box, exact labels on
every frame) is segmented over its WHOLE loop through the engine's `Session`:
- a prompted model (MemSAM) gets, for each structure, one box on frame 0: the tight box of that
  structure's true mask (the structure's helper points apply, `echosam.structures.box_helper_points`),
  and memory propagates it through every frame. As `echosam segment` does by default, the loop is read three
  times, from the boxes as given and 5 % larger and smaller per side, and the reading with the middle EF is
  scored (`echosam.ef_check`); ``readings=False`` (`training.evaluate --one-reading`) scores the boxes as given;
- a prompt-free model (MediViSTA, MA-SAM) segments the loop without prompts.

Baselines get the same frame-0 boxes:
- ``box copy``: the frame-0 box of each structure, as a filled rectangle, on every frame;
- ``Otsu in box``: per frame, Otsu's threshold of the pixels inside the frame-0 box; the cavities
  (LV, LA) are the dark side, the myocardium the bright side; the component with most pixels is kept.

``truth`` (optional row): the true labels themselves through the same estimator; their ED/ES frame errors are
the finder's own (the true ED/ES are the motion model's, the finder reads the label area curve).

Metrics per case: Dice per structure (mean over frames), LV Dice on the true ES frames, LV HD95 (mm),
EF of the product's estimator (`echosam.cardiac.analyse`, single-plane disks) on the predicted labels
vs the same estimator on the true labels (so the error is the segmentation's, not the formula's),
and ED/ES frame errors (each true ED/ES frame of the motion model vs the nearest detected one, in
frames). Tables are split by view (A4C / A2C) with an "all" row.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

STRUCT = ("lv", "myo", "la")
LABEL = {"lv": 1, "myo": 2, "la": 3}


def load_case(path) -> dict:
    z = np.load(path, allow_pickle=False)
    return {"name": Path(path).stem, "frames": z["frames"], "labels": z["labels"], "spacing": tuple(z["spacing"]),
            "fps": float(z["fps"]), "ed": list(z["ed"]), "es": list(z["es"]),
            "params": json.loads(str(z["params"])), "fan": z["fan"] if "fan" in z.files else None}


def pending_cases(data, out: Path):
    """(set name, case name, case) of every ``case_*.npz`` in the folders ``data`` that has no row yet in the JSON
    lines ``out`` (keys ``set`` and ``case``): a bench run appending one row per case resumes where it stopped."""
    lines = Path(out).read_text().splitlines() if Path(out).exists() else []
    rows = [json.loads(line) for line in lines if line.strip()]
    done = {(r["set"], r["case"]) for r in rows}
    for root in data:
        for path in sorted(Path(root).glob("case_*.npz")):
            if (Path(root).name, path.stem) not in done:
                yield Path(root).name, path.stem, load_case(path)


def truth_boxes(labels0: np.ndarray) -> dict:
    from .datasets.clips import mask_box

    return {k: mask_box(labels0 == LABEL[k]) for k in STRUCT if (labels0 == LABEL[k]).any()}


def case_session(loaded, case: dict, structures, boxes: dict, second=None) -> tuple:
    """(Session, region or None) for a case as `echosam segment` runs it: a prompt-zoomed MemSAM
    (`echosam.zoom`) on the crop of the case's fan around the joint box of ``boxes`` (full-frame
    pixels), any other model on the whole case. Prompts then go in ``region.box_to_crop`` pixels and
    labels come back through ``region.uncrop``. ``second``: the model's companion read on the fan
    (`companion_reading`), averaged in as `echosam segment` does (None: the model alone)."""
    from echosam.session import Session
    from echosam.zoom import joint_extent, zoom_for

    cine, fan = case_cine(case)
    region = None
    if loaded.prompted and boxes:
        zoomed, _ = zoom_for(fan, loaded, joint_extent({k: boxes[k] for k in structures if k in boxes}))
        if zoomed.zoom:
            region, cine = zoomed, zoomed.crop_cine(cine)
    return Session(cine, loaded, structures=list(structures),
                   companion=second.on(region) if second is not None else None), region


def case_cine(case: dict) -> tuple:
    """(the case's cine, its fan region: the simulator's fan mask, else the whole frame)."""
    from echosam.cine import Cine
    from echosam.fan import FanRegion

    cine = Cine.from_array(case["frames"], spacing=case["spacing"], fps=case["fps"], name=case["name"])
    fan = case.get("fan")
    return cine, (FanRegion.from_mask(fan, "user") if fan is not None else FanRegion.whole_frame(cine.frames.shape[1:]))


def companion_reading(loaded, case: dict, structures):
    """The companion ``loaded`` asks for (`echosam.companion`), read once on the case's fan as `echosam segment`
    reads it; None when it asks none. A companion that cannot run stops the evaluation (its numbers would not be
    the product's)."""
    from echosam.companion import companion_spec, read_fan

    if not (loaded.prompted and companion_spec(loaded)):
        return None
    cine, fan = case_cine(case)
    problems: list = []
    second = read_fan(loaded, fan, fan.crop_cine(cine), list(structures), str(loaded.device),
                      notify=problems.append)
    if second is None:
        raise RuntimeError(problems[-1] if problems else "the companion did not run")
    return second


def run_model(loaded, case: dict, structures, boxes: dict, readings: bool = True) -> np.ndarray:
    """The labels ``loaded`` gives ``case`` from ``boxes`` (full-frame pixels), as `echosam segment` runs it: a
    prompted model given boxes reads the loop three times and keeps the middle reading unless ``readings`` is
    False (`echosam.ef_check`); a model whose config asks for a companion gets it (`companion_reading`)."""
    from echosam.cardiac import analyse
    from echosam.ef_check import read_three, scaled_box

    second = companion_reading(loaded, case, structures) if boxes else None
    pred = one_reading(loaded, case, structures, boxes, second)
    if not (readings and loaded.prompted and boxes):
        return pred
    shape, times = case["labels"].shape[1:], np.arange(len(pred)) / case["fps"]
    chosen, _ = read_three(
        pred, lambda c: one_reading(loaded, case, structures, {k: scaled_box(b, c, shape) for k, b in boxes.items()},
                                    second),
        lambda p: analyse(p, case["spacing"], times, frames=case["frames"], predicted=True).ef_percent)
    return chosen


def one_reading(loaded, case: dict, structures, boxes: dict, second=None) -> np.ndarray:
    s, region = segmented_session(loaded, case, structures, boxes, second)
    labels = np.asarray(s.labels).copy()
    return labels if region is None else region.uncrop(labels)


def segmented_session(loaded, case: dict, structures, boxes: dict, second=None) -> tuple:
    """`case_session` with ``boxes`` on frame 0 and the loop segmented (propagated, or prompt-free)."""
    s, region = case_session(loaded, case, structures, boxes, second)
    if s.prompted:
        for k in structures:
            if k in boxes:
                box = boxes[k] if region is None else region.box_to_crop(boxes[k])
                s.add_box(0, k, tuple(float(v) for v in box))
        s.propagate()
    else:
        s.segment_auto()
    return s, region


def baseline_box(case: dict, boxes: dict) -> np.ndarray:
    T, H, W = case["labels"].shape
    out = np.zeros((T, H, W), np.uint8)
    for k in ("la", "myo", "lv"):                        # LV drawn last: it wins where boxes overlap
        if k in boxes:
            x0, y0, x1, y1 = (int(round(v)) for v in boxes[k])
            out[:, y0:y1 + 1, x0:x1 + 1] = LABEL[k]
    return out


def baseline_otsu(case: dict, boxes: dict) -> np.ndarray:
    from scipy import ndimage

    frames = case["frames"].astype(np.float32)
    T, H, W = frames.shape
    out = np.zeros((T, H, W), np.uint8)
    for k in ("myo", "la", "lv"):
        if k not in boxes:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[k])
        for t in range(T):
            roi = frames[t, y0:y1 + 1, x0:x1 + 1]
            thr = otsu_threshold(roi) if (roi > 0).sum() > 4 else 0.0
            m = (roi > thr) if k == "myo" else ((roi <= thr) & (roi > 0))
            lab, n = ndimage.label(m)
            if n:
                m = lab == (1 + int(np.argmax(ndimage.sum(m, lab, range(1, n + 1)))))
                if k != "myo":
                    m = ndimage.binary_fill_holes(m)
            region = out[t, y0:y1 + 1, x0:x1 + 1]
            region[m] = LABEL[k]
    return out


def otsu_threshold(roi: np.ndarray) -> float:
    """Otsu's threshold (SimpleITK) of the non-zero pixels (inside the fan) of a region."""
    import SimpleITK as sitk

    f = sitk.OtsuThresholdImageFilter()
    f.SetInsideValue(0)
    f.SetOutsideValue(1)
    f.SetMaskValue(1)
    f.Execute(sitk.GetImageFromArray(roi.astype(np.float32)), sitk.GetImageFromArray((roi > 0).astype(np.uint8)))
    return float(f.GetThreshold())


def lv_area_ratio(pred: np.ndarray, truth: np.ndarray, t: int) -> float:
    """Predicted over true LV area on frame ``t`` (nan where the truth has no LV there)."""
    n = int((truth[t] == 1).sum())
    return float((pred[t] == 1).sum() / n) if n else float("nan")


def score(pred: np.ndarray, case: dict) -> dict:
    from echosam.cardiac import analyse
    from echosam.metrics import dice, hd95_assd

    truth, sp = case["labels"], case["spacing"]
    row = {}
    for k in STRUCT:
        d = [dice(pred[t] == LABEL[k], truth[t] == LABEL[k]) for t in range(len(truth)) if (truth[t] == LABEL[k]).any()]
        row[f"dice_{k}"] = float(np.mean(d)) if d else float("nan")
    es = [t for t in case["es"] if 0 <= t < len(truth)]
    row["dice_lv_es"] = float(np.mean([dice(pred[t] == 1, truth[t] == 1) for t in es])) if es else float("nan")
    # the LV's size at the true ED and ES frames, pred / true: how the EF error splits between the two phases
    for phase, frames in (("ed", case["ed"]), ("es", es)):
        r = [lv_area_ratio(pred, truth, t) for t in frames if 0 <= t < len(truth) and (truth[t] == 1).any()]
        row[f"lv_area_ratio_{phase}"] = float(np.mean(r)) if r else float("nan")
    hd = [hd95_assd(pred[t] == 1, truth[t] == 1, sp)[0] for t in range(0, len(truth), max(len(truth) // 12, 1))]
    row["hd95_lv_mm"] = float(np.nanmean(hd)) if np.isfinite(hd).any() else float("nan")
    times = np.arange(len(truth)) / case["fps"]
    rp, rt = analyse(pred, sp, times), analyse(truth, sp, times)
    row["ef_pred"], row["ef_true"] = float(rp.ef_percent), float(rt.ef_percent)
    # 1: the predicted volume curve follows the truth's swing; below 1: pulled towards its mean
    vt = rt.volume_disks_ml
    row["volume_slope"] = float(np.polyfit(vt, rp.volume_disks_ml, 1)[0]) if np.ptp(vt) > 0 else float("nan")
    row["ef_error"] = row["ef_pred"] - row["ef_true"]
    row["ef_status"] = rp.status

    def frame_err(true_frames, found):
        if not true_frames or not found:
            return float("nan")
        return float(np.mean([min(abs(int(t) - int(f)) for f in found) for t in true_frames]))

    row["ed_frame_err"] = frame_err(case["ed"], rp.ed_frames)
    row["es_frame_err"] = frame_err(case["es"], rp.es_frames)
    return row


def evaluate_loops(data_dir, methods: dict, out=None, structures=STRUCT, limit=None, progress=True,
                   readings: bool = True) -> list:
    """``methods``: {name: loaded model | "box" | "otsu" | "truth"}; ``readings``: `run_model`'s. Returns one row
    per (method, case)."""
    from tqdm import tqdm

    files = sorted(Path(data_dir).glob("case_*.npz"))[: limit or None]
    if not files:
        raise FileNotFoundError(f"{data_dir} holds no case_*.npz (make them with training.simulator.cache)")
    rows = []
    for f in tqdm(files, desc=f"loops {Path(data_dir).name}", disable=not progress):
        case = load_case(f)
        boxes = truth_boxes(case["labels"][0])
        for name, m in methods.items():
            t0 = time.perf_counter()
            if m == "truth":          # the estimator's own ED/ES error on exact labels
                pred = case["labels"]
            elif m == "box":
                pred = baseline_box(case, boxes)
            elif m == "otsu":
                pred = baseline_otsu(case, boxes)
            else:
                keys = [k for k in structures if k in [c.lower() for c in m.classes]]
                pred = run_model(m, case, keys, boxes, readings=readings)
            row = {"method": name, "case": case["name"], "view": case["params"]["view"], **score(pred, case),
                   "seconds": round(time.perf_counter() - t0, 2)}
            rows.append(row)
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "loops.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        (out / "loops.md").write_text(table(rows, title=str(data_dir)))
    return rows


def table(rows: list, title: str = "") -> str:
    cols = [("dice_lv", "LV Dice"), ("dice_lv_es", "LV Dice (ES)"), ("dice_myo", "MYO Dice"), ("dice_la", "LA Dice"),
            ("hd95_lv_mm", "LV HD95 mm")]
    lines = [f"### {title}" if title else "", "",
             "| method | view | n | " + " | ".join(c for _, c in cols) + " | EF MAE | EF bias | ED err (frames) | ES err (frames) |",
             "|---|---|---|" + "---|" * (len(cols) + 4)]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        for view in ("a4c", "a2c", "all"):
            sel = [r for r in rows if r["method"] == m and (view == "all" or r["view"] == view)]
            if not sel:
                continue
            mean = lambda k: np.nanmean([r[k] for r in sel]) if np.isfinite([r[k] for r in sel]).any() else np.nan
            efe = np.array([r["ef_error"] for r in sel], float)
            ok = np.isfinite(efe)
            cells = [f"{mean(k):.3f}" for k, _ in cols[:4]] + [f"{mean('hd95_lv_mm'):.1f}"]
            ef_cells = [f"{np.mean(np.abs(efe[ok])):.1f}" if ok.any() else "–",
                        f"{np.mean(efe[ok]):+.1f}" if ok.any() else "–"]
            if ok.sum() < len(efe):
                ef_cells[0] += f" ({ok.sum()}/{len(efe)} with EF)"
            lines.append(f"| {m} | {view} | {len(sel)} | " + " | ".join(cells) + " | " + " | ".join(ef_cells)
                         + f" | {mean('ed_frame_err'):.1f} | {mean('es_frame_err'):.1f} |")
    return "\n".join(lines) + "\n"
