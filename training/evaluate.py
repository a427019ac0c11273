"""Evaluate a trained model on a dataset, in the form of the papers' tables.

    python -m training.evaluate --model runs/x/best.safetensors --data camus:/data/CAMUS --split test --out eval/
    python -m training.evaluate --model demo.safetensors --data phantom:seed=900000,n_cases=16,n_frames=24,size=64
    python -m training.evaluate --model m.safetensors --data training/configs/memsam_camus.yaml --split test

Protocol (MemSAM ``eval_camus``/``eval_echonet``, models.md §1.5): 10-frame ED->ES clips at the
original resolution (model logits resized back bilinearly), MemSAM prompted by the fixed median
click of the first frame's ground truth, binarised ``sigmoid > --threshold`` (paper: 0.6; the
engine's default 0.5), prompt-free models by argmax. Every annotated frame of the clip is scored
(CAMUS: all frames; EchoNet: ED and ES), per structure: Dice and IoU (%), HD95 and ASSD in mm
(`echosam.metrics`; pixels for EchoNet, which has no spacing). Averages are over frames, not
patients (as the papers).

EF: per clip, single-plane method-of-disks volumes (`echosam.cardiac.volume_curves`) of the
predicted ED and ES masks -> EF, compared with the dataset's EF (CAMUS cfg, EchoNet FileList,
phantom truth): Pearson correlation (%), bias (mean of predicted - reference) and std of the
differences (MemSAM Table 2 form). The same numbers from the ground-truth masks are shown as a
reference row (the method's own error, independent of the model).

Writes ``per_frame.csv``, ``ef.csv``, ``summary.csv``, ``ef_summary.csv`` and ``summary.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import ClipDataset, build_source, parse_data_spec, role_config
from .steps import logits_to_labels, prepare_images


def _load_data_cfg(spec: str, split: str) -> dict:
    if spec.endswith((".yaml", ".yml")):
        from .config import load_config

        return role_config(load_config(spec)["data"], split)
    cfg = parse_data_spec(spec)
    if cfg["dataset"] in ("camus", "echonet"):
        cfg["split"] = split
    return cfg


def predict_clip(loaded, item: dict, threshold: float) -> np.ndarray:
    """Full-resolution (T, H, W) class indices for one clip from `ClipDataset` (size=None)."""
    model, dev = loaded.model, loaded.device
    frames = item["frames"][None]
    H, W = frames.shape[-2:]
    with torch.no_grad():
        images = prepare_images(model, frames, dev)
        if loaded.prompted:
            S = images.shape[-1]
            pt = item["point"].to(dev, torch.float32).clone()
            pt[0] *= S / W
            pt[1] *= S / H
            lab = torch.tensor([[1.0 if item["point"][0] >= 0 else -1.0]], device=dev)
            logits = model(images, pt[None, None], lab)
        else:
            logits = model(images)
        logits = F.interpolate(logits[0].float(), size=(H, W), mode="bilinear", align_corners=False)
    return logits_to_labels(logits, loaded.prompted, threshold).cpu().numpy()


def _ef(labels_ed_es: np.ndarray, spacing) -> float:
    from echosam.cardiac import volume_curves

    v = volume_curves(labels_ed_es.astype(np.uint8), spacing)["volume_disks_ml"]
    return float(100.0 * (v[0] - v[1]) / v[0]) if v[0] > 0 else float("nan")


def agreement(pred, ref) -> dict:
    p, r = np.asarray(pred, float), np.asarray(ref, float)
    ok = np.isfinite(p) & np.isfinite(r)
    p, r = p[ok], r[ok]
    if len(p) < 2:
        return {"n": int(len(p)), "corr_percent": float("nan"), "bias": float("nan"), "std": float("nan")}
    d = p - r
    corr = float(np.corrcoef(p, r)[0, 1]) if p.std() > 0 and r.std() > 0 else float("nan")
    return {"n": int(len(p)), "corr_percent": 100 * corr, "bias": float(d.mean()), "std": float(d.std(ddof=1))}


def evaluate(loaded, dataset: ClipDataset, threshold: float = 0.5, progress: bool = True, max_clips=None) -> dict:
    from tqdm.auto import tqdm

    from echosam.metrics import frame_metrics
    from echosam.structures import get_structure

    classes = list(dataset.classes)
    rows, ef_rows = [], []
    n = min(len(dataset), int(max_clips)) if max_clips else len(dataset)
    for i in tqdm(range(n), desc="evaluate", unit="clip", disable=not progress):
        item = dataset[i]
        pred = predict_clip(loaded, item, threshold)
        masks, labelled = item["masks"].numpy(), item["labelled"].numpy()
        spacing = tuple(item["spacing"].tolist())
        for c, key in enumerate(classes, start=1):
            sel = np.flatnonzero(labelled)
            if len(sel) == 0:
                continue
            m = frame_metrics(pred[sel] == c, masks[sel] == c, spacing)
            for j, f in enumerate(sel):
                rows.append({"case": item["name"], "clip_frame": int(f), "frame": int(item["indices"][f]),
                             "structure": key, **{k: float(m[k][j]) for k in ("dice", "iou", "hd95", "assd")}})
        if "lv" in classes:
            to_camus = np.zeros(len(classes) + 1, np.uint8)
            for c, key in enumerate(classes, start=1):
                to_camus[c] = get_structure(key).label
            ed, es = int(item["ed"]), int(item["es"])
            ef_pred = _ef(to_camus[pred[[ed, es]]], spacing)
            ef_gt = _ef(to_camus[masks[[ed, es]].clip(0, len(classes))], spacing) if labelled[[ed, es]].all() \
                else float("nan")
            ef_rows.append({"case": item["name"], "ef_dataset": float(item["ef"]), "ef_pred": ef_pred, "ef_gt_masks": ef_gt})
    summary = []
    for key in classes:
        r = [x for x in rows if x["structure"] == key]
        s = {"structure": key, "frames": len(r)}
        for k in ("dice", "iou", "hd95", "assd"):
            v = np.array([x[k] for x in r], float)
            v = v[np.isfinite(v)]
            scale = 100.0 if k in ("dice", "iou") else 1.0
            s[k], s[k + "_std"] = (scale * v.mean(), scale * v.std()) if len(v) else (float("nan"), float("nan"))
        summary.append(s)
    ef = {"pred_vs_dataset": agreement([r["ef_pred"] for r in ef_rows], [r["ef_dataset"] for r in ef_rows]),
          "gt_masks_vs_dataset": agreement([r["ef_gt_masks"] for r in ef_rows], [r["ef_dataset"] for r in ef_rows]),
          "pred_vs_gt_masks": agreement([r["ef_pred"] for r in ef_rows], [r["ef_gt_masks"] for r in ef_rows])}
    return {"per_frame": rows, "ef_rows": ef_rows, "summary": summary, "ef": ef}


def markdown(result: dict, title: str) -> str:
    lines = [f"### {title}", "", "| Structure | Dice (%) | mIoU (%) | HD95 (mm) | ASSD (mm) | frames |",
             "|---|---|---|---|---|---|"]
    for s in result["summary"]:
        lines.append(f"| {s['structure']} | {s['dice']:.2f} ± {s['dice_std']:.2f} | {s['iou']:.2f} ± {s['iou_std']:.2f} "
                     f"| {s['hd95']:.2f} ± {s['hd95_std']:.2f} | {s['assd']:.2f} ± {s['assd_std']:.2f} | {s['frames']} |")
    if result["ef_rows"]:
        lines += ["", "| EF (single-plane disks) | corr (%) | bias | std | n |", "|---|---|---|---|---|"]
        names = {"pred_vs_dataset": "predicted vs dataset EF", "gt_masks_vs_dataset": "GT masks vs dataset EF",
                 "pred_vs_gt_masks": "predicted vs GT-mask EF"}
        for k, a in result["ef"].items():
            lines.append(f"| {names[k]} | {a['corr_percent']:.2f} | {a['bias']:.2f} | {a['std']:.2f} | {a['n']} |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, action="append",
                    help="own-format checkpoint (.safetensors) from training.train, or a Models.json name; repeat to "
                         "compare (loop protocol)")
    ap.add_argument("--protocol", default="clip", choices=["clip", "loop"],
                    help="clip: the papers' 10-frame ED->ES clips; loop: whole loops through the engine's Session "
                         "(box prompts on frame 0 for MemSAM), with EF and ED/ES from the product's estimator "
                         "(simulated data: simulated:PATH)")
    ap.add_argument("--baselines", action="store_true", help="loop protocol: add the box-copy and Otsu-in-box rows")
    ap.add_argument("--truth-row", action="store_true",
                    help="loop protocol: add the estimator on the TRUE labels (Dice 1, EF error 0): its ED/ES frame "
                         "errors are the floor any segmentation can reach with the product's ED/ES finder")
    ap.add_argument("--limit", type=int, default=None, help="loop protocol: first N cases only")
    ap.add_argument("--one-reading", action="store_true",
                    help="loop protocol: a prompted model reads the loop once, from the boxes as given (as "
                         "`echosam segment --no-ef-check`); default: three readings, the middle one scored")
    ap.add_argument("--data", required=True, help="camus:PATH | echonet:PATH | folder:PATH | phantom:k=v,... | config.yaml")
    ap.add_argument("--split", default="test", help="train | val | test (CAMUS: MemSAM sequential split)")
    ap.add_argument("--out", default=None, help="folder for the CSV/markdown tables (default: next to the model)")
    ap.add_argument("--threshold", type=float, default=0.5, help="MemSAM sigmoid threshold (paper: 0.6)")
    ap.add_argument("--clip-frames", type=int, default=10, help="ED->ES clip length; 0 = whole loop")
    ap.add_argument("--supervision", default="full", choices=["full", "semi"], help="score every labelled frame or ED/ES")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-clips", type=int, default=None)
    args = ap.parse_args(argv)
    from echosam.errors import EchoSAMError

    try:
        return _run(args, ap)
    except EchoSAMError as e:                # a missing model, bad data: one line, not a traceback
        raise SystemExit(f"python -m training.evaluate: {e}") from None


def _run(args, ap) -> int:
    from echosam.checkpoints import load_model

    if args.protocol == "loop":
        return _main_loop(args)
    if len(args.model) != 1:
        ap.error("the clip protocol evaluates one --model; use --protocol loop to compare several")
    args.model = args.model[0]
    loaded = load_model(args.model, device=args.device)
    if loaded.prompted and len(loaded.classes) > 1:
        ap.error(f"{args.model} propagates {', '.join(loaded.classes)} one structure at a time; "
                 "evaluate it with --protocol loop")
    data_cfg = _load_data_cfg(args.data, args.split)
    data_cfg.setdefault("on_bad_sample", "skip")
    ds = ClipDataset(build_source(data_cfg), classes=loaded.classes, clip_frames=args.clip_frames or None,
                     supervision=args.supervision, size=None, train=False)
    result = evaluate(loaded, ds, threshold=args.threshold, max_clips=args.max_clips)
    out = Path(args.out) if args.out else Path(args.model).with_suffix("").parent / f"eval_{Path(args.model).stem}"
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "per_frame.csv", result["per_frame"])
    _write_csv(out / "ef.csv", result["ef_rows"])
    _write_csv(out / "summary.csv", result["summary"])
    _write_csv(out / "ef_summary.csv", [{"comparison": k, **v} for k, v in result["ef"].items()] if result["ef_rows"] else [])
    md = markdown(result, f"{Path(args.model).name} on {args.data} ({args.split}, {len(ds)} clips)")
    (out / "summary.md").write_text(md)
    print(md)
    return 0


def _main_loop(args) -> int:
    from echosam.checkpoints import load_model

    from .loop_eval import evaluate_loops, table

    kind, _, root = args.data.partition(":")
    if kind != "simulated" or not root:
        raise SystemExit("--protocol loop needs --data simulated:PATH (a folder of case_*.npz with labels on every frame)")
    methods = {Path(m).stem if Path(m).stem not in ("best", "final") else Path(m).parent.name:
               load_model(m, device=args.device) for m in args.model}
    if args.baselines:
        methods.update({"box copy (baseline)": "box", "Otsu in box (baseline)": "otsu"})
    if args.truth_row:
        methods["true labels (estimator floor)"] = "truth"
    out = Path(args.out) if args.out else Path("runs") / f"loops_{Path(root).name}"
    rows = evaluate_loops(root, methods, out=out, limit=args.limit, readings=not args.one_reading)
    print(table(rows, title=f"{', '.join(methods)} on {root} ({len(rows) // len(methods)} loops)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
