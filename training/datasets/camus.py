"""CAMUS (2023 NIfTI release) as a sequence source.

Layout (official, one folder per patient)::

    ROOT/patient0001/patient0001_2CH_half_sequence.nii.gz      image, 3D: x, y, time (ITK axes)
    ROOT/patient0001/patient0001_2CH_half_sequence_gt.nii.gz   labels 0 bg, 1 LV, 2 MYO, 3 LA, every frame
    ROOT/patient0001/Info_2CH.cfg                              "ED: 1", "ES: 13", "NbFrame: 13", "EF: 57.9", ...
    (same for 4CH)

SimpleITK gives the arrays as (T, H, W); the in-plane spacing is (row_mm = spacing[1], col_mm =
spacing[0]). ``ED``/``ES`` in the cfg are 1-based frame numbers of the half sequence (ED is usually 1
and ES the last frame). The dataset EF is the cfg's ``EF`` (older releases: ``LVef``).

Split ``"memsam"`` is MemSAM's sequential 70/10/20 split by patient number: 1-350 train, 351-400
val, 401-500 test. A list of patient numbers or names also works.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence as Seq

import numpy as np

from .clips import DatasetError, Sequence, handle_bad

MEMSAM_SPLIT = {"train": (1, 350), "val": (351, 400), "test": (401, 500), "all": (1, 10**6)}
VIEWS = ("2CH", "4CH")


def parse_info_cfg(path: Path) -> dict:
    """``Key: value`` lines -> dict; numbers become int/float, the rest stays text."""
    out = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if ":" not in line:
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        if not key:
            continue
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def _read_nifti(path: Path):
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise DatasetError(f"{path}: cannot read NIfTI ({str(e).strip().splitlines()[-1]})") from None
    arr = sitk.GetArrayFromImage(img)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D half sequence (x, y, time), got array shape {arr.shape}")
    sp = img.GetSpacing()
    return arr, (float(sp[1]), float(sp[0]))


class CamusSource:
    """One `Sequence` per (patient, view). Cheap checks (files present, cfg readable, ED/ES in range)
    happen at construction; image decoding at `load`."""

    def __init__(self, root, split="train", views: Seq[str] = VIEWS, on_bad_sample: str = "skip"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"CAMUS folder not found: {self.root}. Point data.root at the folder that holds "
                               "patient0001/, patient0002/, ...")
        self.on_bad_sample = on_bad_sample
        self.views = [v.upper() for v in views]
        for v in self.views:
            if v not in VIEWS:
                raise DatasetError(f"Unknown CAMUS view {v!r}; choose from {VIEWS}.")
        self.cases: list = []   # (name, image, gt, info dict)
        for pdir in sorted(p for p in self.root.iterdir() if p.is_dir() and re.fullmatch(r"patient\d{4}", p.name)):
            if not self._in_split(int(pdir.name[7:]), pdir.name, split):
                continue
            for view in self.views:
                self._add_case(pdir, view)

    @staticmethod
    def _in_split(number: int, name: str, split) -> bool:
        if isinstance(split, str):
            if split not in MEMSAM_SPLIT:
                raise DatasetError(f"Unknown CAMUS split {split!r}; use train/val/test/all or a list of patients.")
            lo, hi = MEMSAM_SPLIT[split]
            return lo <= number <= hi
        wanted = {str(s) for s in split} | {f"patient{int(s):04d}" for s in split if str(s).isdigit()}
        return name in wanted or str(number) in wanted

    def _add_case(self, pdir: Path, view: str) -> None:
        stem = f"{pdir.name}_{view}_half_sequence"
        image, gt, cfg = pdir / f"{stem}.nii.gz", pdir / f"{stem}_gt.nii.gz", pdir / f"Info_{view}.cfg"
        for f, what in ((image, "image"), (gt, "label file"), (cfg, "info file")):
            if not f.exists():
                handle_bad(self.on_bad_sample, f"{f}: missing {what}")
                return
        info = parse_info_cfg(cfg)
        try:
            ed, es, nb = int(info["ED"]), int(info["ES"]), int(info.get("NbFrame", 0))
        except (KeyError, ValueError, TypeError):
            handle_bad(self.on_bad_sample, f"{cfg}: needs integer 'ED:' and 'ES:' lines")
            return
        if min(ed, es) < 1 or (nb and max(ed, es) > nb):
            handle_bad(self.on_bad_sample, f"{cfg}: ED={ed}/ES={es} outside frames 1..{nb}")
            return
        self.cases.append((f"{pdir.name}_{view}", image, gt, info))

    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        return f"CamusSource({self.root}, {len(self)} sequences)"

    def load(self, i: int) -> Sequence:
        name, image, gt, info = self.cases[i]
        frames, spacing = _read_nifti(image)
        labels, _ = _read_nifti(gt)
        if labels.shape != frames.shape:
            raise DatasetError(f"{gt}: label shape {labels.shape} differs from image shape {frames.shape}")
        T = frames.shape[0]
        nb = int(info.get("NbFrame", T) or T)
        if nb != T:
            raise DatasetError(f"{image}: {T} frames but NbFrame: {nb} in Info cfg")
        ed, es = int(info["ED"]) - 1, int(info["ES"]) - 1
        if max(ed, es) >= T:
            raise DatasetError(f"{image}: ED/ES ({ed + 1}/{es + 1}) beyond the {T} frames")
        bad = np.setdiff1d(np.unique(labels), [0, 1, 2, 3])
        if bad.size:
            raise DatasetError(f"{gt}: unexpected label values {bad.tolist()} (CAMUS uses 0..3)")
        ef = info.get("EF", info.get("LVef", float("nan")))
        return Sequence(name=name, frames=_to_float255(frames), labels={t: labels[t].astype(np.uint8) for t in range(T)},
                        spacing=spacing, ed=ed, es=es, ef=float(ef) if isinstance(ef, (int, float)) else float("nan"),
                        meta={"source": "camus", "image": str(image), "info": info,
                              "fps": info.get("FrameRate")})


def _to_float255(a: np.ndarray) -> np.ndarray:
    """uint8 as is; other dtypes min-max scaled over the whole cine (the engine's intensity rule)."""
    if a.dtype == np.uint8:
        return a.astype(np.float32)
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
