"""The prompt store: what the user said on which frame (the one owner of prompts and their versions).

One `FramePrompt` per (structure key, frame): include/exclude points, a box, or a mask. A mask is
either a **correction** (the user's edited mask: it locks that frame for that structure, and the
session outputs it bit for bit) or a **seed** (a prompt-free model's result used as a MemSAM key
frame; not locked, replaced by any user prompt on that frame). Every change bumps the entry's
``version``; the session compares versions to find the frames whose result is stale.

Coordinates are cine pixels: ``x`` = column (W axis), ``y`` = row (H axis); masks are (H, W) bool.
Validation happens here, before anything changes: bad input raises `PromptError`, state unchanged.
Undo works on `snapshot` / `restore`; `to_dict` / `load_dict` are the JSON form (persistence, the
Slicer scene). Versions only grow, also across `restore`, so a stale result is never mistaken for a
fresh one.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import PromptError
from ..structures import get_structure


@dataclass
class FramePrompt:
    points: list = field(default_factory=list)     # [(x, y)] cine pixels
    labels: list = field(default_factory=list)     # [1 include | 0 exclude]
    box: Optional[tuple] = None                     # (x0, y0, x1, y1) cine pixels, inclusive
    mask: Optional[np.ndarray] = None               # (H, W) bool
    seed: bool = False                              # mask came from a prompt-free model
    version: int = 0

    @property
    def locked(self) -> bool:
        return self.mask is not None and not self.seed

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None and self.mask is None


# ---- run-length encoding of masks (JSON-able) ----------------------------------------------------
def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> {"size": [H, W], "counts": [...]}: alternating run lengths of 0s and 1s
    over the row-major flattened mask, starting with a (possibly empty) run of 0s."""
    flat = np.asarray(mask, dtype=bool).ravel()
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: dict, shape_hw: Optional[tuple] = None) -> np.ndarray:
    """Inverse of `mask_to_rle`. The declared size is checked against ``shape_hw`` (the cine's (H, W))
    before anything is allocated: a 250-byte mask claiming 50000 x 100000 pixels is refused, not decoded."""
    h, w = (int(v) for v in rle["size"])
    if shape_hw is not None and (h, w) != tuple(shape_hw):
        raise PromptError(f"A stored mask is {h}x{w} but the cine is {shape_hw[0]}x{shape_hw[1]}; the prompts file "
                          "is corrupt.")
    if h <= 0 or w <= 0:
        raise PromptError(f"A stored mask has size {h}x{w}; the prompts file is corrupt.")
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.ndim != 1 or len(counts) > h * w + 1:
        raise PromptError("A stored mask has more runs than pixels; the prompts file is corrupt.")
    if counts.sum() != h * w or (counts < 0).any():
        raise PromptError(f"A stored mask's run lengths do not add up to {h}x{w}; the prompts file is corrupt.")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(h, w)


class PromptStore:
    """Prompts by (structure, frame); ``entries`` maps (structure key, frame) -> `FramePrompt`."""

    def __init__(self, n_frames: int, shape_hw: tuple, structures: list) -> None:
        self.n_frames = int(n_frames)
        self.shape_hw = tuple(int(s) for s in shape_hw)
        self.structures = list(structures)
        self.entries: dict = {}
        self._counter = 0

    # ---- validation ---------------------------------------------------------------------------
    def check_frame(self, frame) -> int:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            raise PromptError(f"Frame index must be an integer, got {frame!r}.")
        if not 0 <= int(frame) < self.n_frames:
            raise PromptError(f"Frame {frame} does not exist: this cine has frames 0..{self.n_frames - 1}.")
        return int(frame)

    def check_structure(self, structure) -> str:
        key = get_structure(structure).key
        if key not in self.structures:
            raise PromptError(f"Structure {key!r} is not part of this session ({', '.join(self.structures)}); "
                              "create the session with it in `structures`.")
        return key

    def _check_xy(self, x: float, y: float, what: str) -> None:
        h, w = self.shape_hw
        if not (np.isfinite(x) and np.isfinite(y)):
            raise PromptError(f"{what} ({x}, {y}) is not a finite coordinate.")
        if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
            raise PromptError(f"{what} (x={x:g}, y={y:g}) is outside the {w}x{h} image "
                              f"(x in 0..{w - 1}, y in 0..{h - 1}); place it on the image.")

    def _check_not_locked(self, key: str, frame: int) -> None:
        e = self.entries.get((key, frame))
        if e is not None and e.locked:
            raise PromptError(f"Frame {frame} of {key} holds a corrected mask (locked); unlock it before adding "
                              "points or a box, or edit the mask instead.")

    # ---- mutations (each returns the new entry; callers snapshot for undo first) --------------
    def _bump(self, e: FramePrompt) -> FramePrompt:
        self._counter += 1
        e.version = self._counter
        return e

    def _check_points(self, points_xy, labels) -> tuple:
        p = np.asarray(points_xy, dtype=float)
        if p.ndim == 1 and p.size == 2:
            p = p[None]
        if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
            raise PromptError(f"Points must be an (N, 2) array of (x, y); got shape {p.shape}.")
        lab = np.atleast_1d(np.asarray(labels))
        if lab.shape != (len(p),):
            raise PromptError(f"{len(p)} point(s) but {lab.size} label(s); give one 1/0 label per point.")
        if not np.isin(lab, (0, 1)).all():
            raise PromptError(f"Point labels must be 1 (include) or 0 (exclude); got {sorted(set(lab.tolist()))}.")
        for (x, y) in p:
            self._check_xy(float(x), float(y), "Point")
        return [(float(x), float(y)) for x, y in p], [int(v) for v in lab]

    def _check_box(self, box) -> tuple:
        b = np.asarray(box, dtype=float).ravel()
        if b.shape != (4,):
            raise PromptError(f"A box is (x0, y0, x1, y1); got {len(b)} number(s).")
        x0, y0, x1, y1 = (float(v) for v in b)
        self._check_xy(x0, y0, "Box corner")
        self._check_xy(x1, y1, "Box corner")
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise PromptError(f"Box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is degenerate: it needs x1 > x0 and y1 > y0 "
                              "by at least one pixel.")
        return (x0, y0, x1, y1)

    def add_points(self, frame, structure, points_xy, labels) -> None:
        """Add include (1) / exclude (0) points to the frame's points (its box is kept)."""
        self.set_points_and_box(frame, structure, points_xy, labels, keep="box_and_points")

    def add_box(self, frame, structure, box) -> None:
        """Set the frame's box (its points are kept)."""
        self.set_points_and_box(frame, structure, box=box, keep="points")

    def set_points_and_box(self, frame, structure, points_xy=None, labels=None, box=None,
                           keep: str = "nothing") -> bool:
        """The frame's points/box prompt, validated first. ``keep``: "nothing" = replace the frame's
        prompt with exactly these points and box (SAM 2's ``clear_old_points=True``); "points" = keep
        its points, replace the box; "box_and_points" = append the points, keep the box unless given.
        A seed on the frame is always replaced. Returns False (and changes nothing, not even the
        version) when the frame already holds exactly this prompt."""
        f, key = self.check_frame(frame), self.check_structure(structure)
        pts, lab = self._check_points(points_xy, labels) if points_xy is not None else ([], [])
        bx = self._check_box(box) if box is not None else None
        if not pts and bx is None:
            raise PromptError("Give points (with labels) or a box for this frame.")
        self._check_not_locked(key, f)
        old = self.entries.get((key, f))
        e = FramePrompt() if old is None or old.seed or keep == "nothing" else copy.deepcopy(old)
        e.points, e.labels = list(e.points) + pts, list(e.labels) + lab
        if bx is not None:
            e.box = bx
        if e.box is None and 1 not in e.labels:
            raise PromptError("Only exclude points on this frame: add at least one include point (label 1) or a box.")
        if old is not None and not old.seed and (old.points, old.labels, old.box) == (e.points, e.labels, e.box):
            return False
        self.entries[(key, f)] = self._bump(e)
        return True

    def check_mask(self, frame, structure, mask) -> tuple:
        f, key = self.check_frame(frame), self.check_structure(structure)
        m = np.asarray(mask)
        if m.shape != self.shape_hw:
            raise PromptError(f"Mask of shape {m.shape} does not match the cine frames {self.shape_hw} (H, W); "
                              "resample it onto the cine grid.")
        if m.dtype != bool:
            if not np.isfinite(m.astype(float)).all():
                raise PromptError("Mask contains NaN or infinite values; give a 0/1 mask.")
            m = m != 0
        if not m.any():
            raise PromptError(f"The mask for {key} on frame {f} is empty; draw the structure, or use unlock()/clear() "
                              "to remove a prompt.")
        return f, key, m.copy()

    def set_mask(self, frame, structure, mask, seed: bool = False) -> None:
        f, key, m = self.check_mask(frame, structure, mask)
        if seed:
            old = self.entries.get((key, f))
            if old is not None and not old.seed:
                return  # never replace a user prompt with a seed
        for other in self.structures:
            o = self.entries.get((other, f))
            if other != key and o is not None and o.locked and not seed and (o.mask & m).any():
                raise PromptError(f"The {key} mask on frame {f} overlaps the corrected {other} mask on that frame by "
                                  f"{int((o.mask & m).sum())} pixel(s); remove the overlap (labels never overlap).")
        self.entries[(key, f)] = self._bump(FramePrompt(mask=m, seed=bool(seed)))

    def unlock(self, frame, structure=None) -> int:
        """Drop the corrected masks on ``frame`` (one structure or all); returns how many."""
        f = self.check_frame(frame)
        keys = [self.check_structure(structure)] if structure is not None else self.structures
        n = 0
        for k in keys:
            e = self.entries.get((k, f))
            if e is not None and e.locked:
                del self.entries[(k, f)]
                n += 1
        return n

    def clear(self, structure=None) -> None:
        keys = [self.check_structure(structure)] if structure is not None else self.structures
        for k in list(self.entries):
            if k[0] in keys:
                del self.entries[k]

    # ---- queries ------------------------------------------------------------------------------
    def key_frames(self, key: str) -> list:
        return sorted(f for (k, f) in self.entries if k == key)

    def locked_frames(self, key: str) -> list:
        return sorted(f for (k, f), e in self.entries.items() if k == key and e.locked)

    def get(self, key: str, frame: int) -> Optional[FramePrompt]:
        return self.entries.get((key, frame))

    @property
    def version(self) -> int:
        """The highest version handed out so far."""
        return self._counter

    def snapshot(self) -> tuple:
        return copy.deepcopy(self.entries), self._counter

    def restore(self, snap: tuple) -> None:
        self.entries, counter = copy.deepcopy(snap[0]), snap[1]
        self._counter = max(self._counter, counter)

    def load_dict(self, d: dict) -> None:
        """Replace every entry by those of a `to_dict` dictionary (validated first: on error nothing changes)."""
        parsed = self.from_dict(d)
        self.entries, self._counter = parsed["entries"], max(self._counter, parsed["counter"])

    # ---- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        items = []
        for (k, f), e in sorted(self.entries.items()):
            d = {"structure": k, "frame": f, "version": e.version}
            if e.points:
                d["points"] = [list(p) for p in e.points]
                d["labels"] = list(e.labels)
            if e.box is not None:
                d["box"] = list(e.box)
            if e.mask is not None:
                d["mask"] = mask_to_rle(e.mask)
                d["seed"] = e.seed
            items.append(d)
        return {"format": "echosam-prompts", "version": 1, "n_frames": self.n_frames,
                "shape": list(self.shape_hw), "structures": list(self.structures), "prompts": items,
                "counter": self._counter}

    def from_dict(self, d: dict) -> dict:
        """Parse and validate ``d`` into new entries (does not change this store)."""
        if not isinstance(d, dict) or d.get("format") != "echosam-prompts":
            raise PromptError("Not an EchoSAM prompts dictionary (format 'echosam-prompts' expected).")
        if list(d.get("shape", [])) != list(self.shape_hw) or int(d.get("n_frames", -1)) != self.n_frames:
            raise PromptError(f"The prompts were made on a {d.get('n_frames')}-frame {d.get('shape')} cine, not this "
                              f"{self.n_frames}-frame {list(self.shape_hw)} one.")
        tmp = PromptStore(self.n_frames, self.shape_hw, self.structures)
        for item in d.get("prompts", []):
            f, k = item["frame"], item["structure"]
            if "mask" in item:
                tmp.set_mask(f, k, rle_to_mask(item["mask"], self.shape_hw), seed=bool(item.get("seed", False)))
            if "box" in item:
                tmp.add_box(f, k, item["box"])
            if "points" in item:
                tmp.add_points(f, k, item["points"], item["labels"])
            tmp.entries[(tmp.check_structure(k), int(f))].version = int(item.get("version", 0))
        return {"entries": tmp.entries, "counter": max(int(d.get("counter", 0)), self._counter)}
