"""EchoNet-Dynamic as a sequence source.

Layout (official)::

    ROOT/Videos/0X1A2B....avi        112 x 112 apical-4-chamber loops
    ROOT/FileList.csv                FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split
    ROOT/VolumeTracings.csv          FileName,X1,Y1,X2,Y2,Frame

``FileList.csv`` names files without the ``.avi`` suffix, ``VolumeTracings.csv`` with it (both are
accepted). ``Split`` is TRAIN / VAL / TEST.

Tracings -> masks, as EchoNet's own loader (echonet/datasets/echo.py) does: per traced frame the
rows are chords across the LV; the first row is the long axis and is dropped; the polygon runs
down one side through (X1, Y1) of the remaining rows and back up the other through (X2, Y2) in
reverse order; vertices are rounded to whole pixels and the polygon is filled (pixel centres
inside or on the outline; PIL's rasteriser). X is the column, Y the row. Of the traced frames the
one with the larger LV area is ED, the smaller ES. Pixel spacing is unknown in EchoNet: 1 mm is
used, so HD95/ASSD come out in pixels (as in MemSAM's tables).

A frame traced with fewer than ``min_tracing_rows`` rows (default 3: the long axis plus two chords,
the fewest that enclose an area), a video with fewer than two traced frames, a missing or
undecodable video are bad samples (``on_bad_sample``: skip with a warning naming the file, or stop).
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from .clips import DatasetError, Sequence, handle_bad

SPLITS = ("TRAIN", "VAL", "TEST")


def tracing_polygon(rows: np.ndarray) -> np.ndarray:
    """(N, 4) rows X1, Y1, X2, Y2 (first = long axis) -> (2(N-1), 2) polygon vertices (x, y), rounded."""
    x = np.concatenate([rows[1:, 0], rows[1:, 2][::-1]])
    y = np.concatenate([rows[1:, 1], rows[1:, 3][::-1]])
    return np.stack([np.rint(x), np.rint(y)], axis=1)


def fill_polygon(vertices: np.ndarray, shape: tuple) -> np.ndarray:
    """Filled polygon (pixel centres inside or on the outline) as an (H, W) bool mask."""
    from PIL import Image, ImageDraw

    H, W = shape
    img = Image.new("L", (W, H), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in vertices], fill=1, outline=1)
    return np.asarray(img, dtype=bool)


def _read_csv(path: Path) -> list:
    if not path.exists():
        raise DatasetError(f"EchoNet-Dynamic file not found: {path}")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _stem(name: str) -> str:
    return name[:-4] if name.lower().endswith(".avi") else name


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


class EchoNetSource:
    """One `Sequence` per video of the chosen split, with the ED and ES tracings as label maps (LV = 1)."""

    def __init__(self, root, split: str = "train", on_bad_sample: str = "skip", min_tracing_rows: int = 3):
        self.root = Path(root)
        self.on_bad_sample = on_bad_sample
        self.min_rows = max(3, int(min_tracing_rows))
        split = str(split).upper()
        if split not in SPLITS + ("ALL",):
            raise DatasetError(f"Unknown EchoNet split {split!r}; choose from train, val, test, all.")
        files = _read_csv(self.root / "FileList.csv")
        need = {"FileName", "EF", "Split"}
        if files and not need <= set(files[0]):
            raise DatasetError(f"{self.root / 'FileList.csv'}: missing columns {sorted(need - set(files[0]))}")
        traces: dict = defaultdict(lambda: defaultdict(list))
        for r in _read_csv(self.root / "VolumeTracings.csv"):
            try:
                traces[_stem(r["FileName"])][int(float(r["Frame"]))].append(
                    [float(r["X1"]), float(r["Y1"]), float(r["X2"]), float(r["Y2"])])
            except (KeyError, ValueError) as e:
                raise DatasetError(f"{self.root / 'VolumeTracings.csv'}: bad row {r} ({e})") from None
        self.cases: list = []
        for r in files:
            if split != "ALL" and str(r["Split"]).upper() != split:
                continue
            stem = _stem(r["FileName"])
            video = self.root / "Videos" / f"{stem}.avi"
            if not video.exists():
                handle_bad(on_bad_sample, f"{video}: video file missing")
                continue
            frames = traces.get(stem, {})
            if len(frames) < 2:
                handle_bad(on_bad_sample, f"{video}: {len(frames)} traced frame(s) in VolumeTracings.csv, need ED and ES")
                continue
            short = [f for f, rows in frames.items() if len(rows) < self.min_rows]
            if short:
                handle_bad(on_bad_sample, f"{video}: tracing of frame {short[0]} has {len(frames[short[0]])} "
                                          f"row(s), fewer than {self.min_rows} (too few points for a polygon)")
                continue
            self.cases.append((stem, video, {f: np.asarray(v) for f, v in frames.items()}, r))

    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        return f"EchoNetSource({self.root}, {len(self)} videos)"

    def load(self, i: int) -> Sequence:
        from echosam.io import read_cine

        stem, video, tracings, row = self.cases[i]
        try:
            cine = read_cine(str(video))
        except Exception as e:  # any decoder failure is a bad sample naming the file
            raise DatasetError(f"{video}: cannot decode video ({type(e).__name__}: {e})") from None
        frames = np.asarray(cine.frames)
        T, H, W = frames.shape
        masks, areas = {}, {}
        for f, rows in tracings.items():
            if not 0 <= f < T:
                raise DatasetError(f"{video}: traced frame {f} outside the video's {T} frames")
            m = fill_polygon(tracing_polygon(rows), (H, W))
            masks[f], areas[f] = m.astype(np.uint8), int(m.sum())
        order = sorted(areas, key=lambda f: (areas[f], f))
        ed, es = order[-1], order[0]
        f32 = frames.astype(np.float32)
        if frames.dtype != np.uint8:
            lo, hi = float(f32.min()), float(f32.max())
            f32 = (f32 - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(f32)
        return Sequence(name=stem, frames=f32, labels={ed: masks[ed], es: masks[es]}, spacing=(1.0, 1.0), ed=ed,
                        es=es, ef=_float(row.get("EF")),
                        meta={"source": "echonet", "video": str(video), "fps": _float(row.get("FPS")),
                              "edv": _float(row.get("EDV")), "esv": _float(row.get("ESV")), "areas": areas})
