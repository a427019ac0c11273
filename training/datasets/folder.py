"""A plain folder of cine + label files (any format `echosam.io` reads) as a sequence source.

::

    FOLDER/case01.nii.gz        cine (T, H, W) (or .seq.nrrd, .nrrd, .mha, .dcm, .avi, .mp4, ...)
    FOLDER/case01_gt.nii.gz     label map (T, H, W), CAMUS values 1 LV, 2 MYO, 3 LA (suffix: label_suffix)
    FOLDER/cases.csv            optional: name,ED,ES,EF  (ED/ES 1-based frame numbers, EF in percent)

Frames whose label map is empty count as unannotated (sparse annotation, e.g. ED and ES only).
Without ``cases.csv`` ED is the annotated frame with the largest LV area and ES the one with the
smallest. 3D files without a time axis are read with slices as frames (``slices_as_frames``).
A cine without its label file is a bad sample (``on_bad_sample``).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .clips import DatasetError, Sequence, handle_bad

COMPOUND = (".seq.nrrd", ".nii.gz")


def split_name(path: Path) -> tuple:
    """('case01', '.nii.gz') for case01.nii.gz; compound suffixes kept together."""
    name = path.name
    for suf in COMPOUND:
        if name.lower().endswith(suf):
            return name[: -len(suf)], name[-len(suf):]
    return path.stem, path.suffix


class FolderSource:
    def __init__(self, root, label_suffix: str = "_gt", on_bad_sample: str = "skip", names=None,
                 slices_as_frames: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"Data folder not found: {self.root}")
        self.on_bad_sample, self.label_suffix = on_bad_sample, label_suffix
        self.slices_as_frames = bool(slices_as_frames)   # a plain 3D NIfTI/NRRD in a training folder is a cine
        table = {}
        if (self.root / "cases.csv").exists():
            with open(self.root / "cases.csv", newline="") as f:
                for r in csv.DictReader(f):
                    table[r["name"]] = r
        self.cases = []
        for p in sorted(self.root.iterdir()):
            stem, ext = split_name(p)
            if not p.is_file() or stem.endswith(label_suffix) or p.name == "cases.csv" or stem.startswith("."):
                continue
            if names is not None and stem not in set(names):
                continue
            gt = p.with_name(stem + label_suffix + ext)
            if not gt.exists():
                handle_bad(on_bad_sample, f"{p}: missing label file {gt.name}")
                continue
            self.cases.append((stem, p, gt, table.get(stem, {})))

    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        return f"FolderSource({self.root}, {len(self)} cines)"

    def load(self, i: int) -> Sequence:
        from echosam.io import read_cine, read_labels

        stem, image, gt, row = self.cases[i]
        try:
            cine = read_cine(str(image), slices_as_frames=self.slices_as_frames)
        except Exception as e:
            raise DatasetError(f"{image}: cannot read cine ({type(e).__name__}: {e})") from None
        try:
            import inspect
            kw = ({"slices_as_frames": self.slices_as_frames}
                  if "slices_as_frames" in inspect.signature(read_labels).parameters else {})
            labels = np.asarray(read_labels(str(gt), **kw)[0])
        except Exception as e:
            raise DatasetError(f"{gt}: cannot read label map ({type(e).__name__}: {e})") from None
        frames = np.asarray(cine.frames)
        if labels.shape != frames.shape[:3]:
            raise DatasetError(f"{gt}: label shape {labels.shape} differs from cine shape {frames.shape[:3]}")
        annotated = [t for t in range(labels.shape[0]) if labels[t].any()]
        if not annotated:
            raise DatasetError(f"{gt}: no frame carries a label")
        if row.get("ED") and row.get("ES"):
            ed, es = int(row["ED"]) - 1, int(row["ES"]) - 1
        else:
            area = {t: int((labels[t] == 1).sum()) for t in annotated}
            ed, es = max(area, key=lambda t: (area[t], -t)), min(area, key=lambda t: (area[t], t))
        f32 = frames.astype(np.float32)
        if frames.dtype != np.uint8:
            lo, hi = float(f32.min()), float(f32.max())
            f32 = (f32 - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(f32)
        ef = float(row["EF"]) if row.get("EF") else float("nan")
        return Sequence(name=stem, frames=f32, labels={t: labels[t].astype(np.uint8) for t in annotated},
                        spacing=tuple(float(s) for s in cine.spacing), ed=ed, es=es, ef=ef,
                        meta={"source": "folder", "image": str(image), "fps": cine.fps})
