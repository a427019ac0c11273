"""The prompts a user gives one run (``echosam segment``, batch manifests): what they are, where the prompt
zoom puts the model's crop, their mapping into that crop, and how they enter a `Session`.

Points and a box may be given for each structure of the run (``--box lv:x0,y0,x1,y1 --box myo:...``,
`prompt_text.split_structure`); unnamed ones go to the run's first structure. A label file (``mask``) seeds
every listed structure present on its frame; a prompt-free ``seed_model`` seeds a prompted model given
nothing else (`echosam.seeding`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from .errors import PromptError
from .structures import get_structure


@dataclass
class StructurePrompt:
    """Points ``(N, 2)`` (cine pixels, x = column) with 1/0 ``labels`` and/or a box (x0, y0, x1, y1)."""

    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    box: Optional[tuple] = None


@dataclass
class Prompts:
    """What the user gives a prompted model on ``frame``: points with 1/0 labels and/or a box for the first
    structure (``points``, ``labels``, ``box``) and for others (``others``: structure key -> `StructurePrompt`);
    a label file whose ``mask_frame`` locks that frame; or a prompt-free ``seed_model`` run on ``frame`` when
    nothing else is given."""

    frame: int = 0
    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    box: Optional[tuple] = None
    mask: Optional[str] = None
    mask_frame: int = 0
    seed_model: Optional[str] = None
    seed_loaded: Optional[object] = None      # ``seed_model`` already loaded (batch workers keep one)
    others: dict = field(default_factory=dict)

    @classmethod
    def from_text(cls, points=(), boxes=(), structures="lv", names=("--points", "--box"), **kw) -> "Prompts":
        """Prompts from the text forms (`prompt_text`: repeated ``--points`` / ``--box`` values or a manifest's
        ``|``-separated cells, each optionally ``"name:..."``; ``names``: what errors call them) for a run of
        ``structures``; ``kw``: the other fields (frame, mask, seed model)."""
        from .prompt_text import prompts_by_structure
        from .structures import parse_structures

        keys = [s.key for s in parse_structures(structures)]
        given = prompts_by_structure(points, boxes, keys, names)
        pts, labs, box = given.pop(keys[0], (None, None, None))
        return cls(points=pts, labels=labs, box=box, others={k: StructurePrompt(*v) for k, v in given.items()}, **kw)

    @property
    def given(self) -> bool:
        return self.points is not None or self.box is not None or self.mask is not None or bool(self.others)

    def by_structure(self, keys) -> list:
        """``[(key, StructurePrompt)]``: the first of ``keys`` with the unnamed prompts, then the others'.
        A prompt for a structure that is not in ``keys`` is a PromptError."""
        extra = [k for k in self.others if k not in keys]
        if extra:
            raise PromptError(f"There are prompts for {', '.join(extra)}, which the run does not segment "
                              f"(structures: {', '.join(keys)}); add {', '.join(extra)} to --structures.")
        first = StructurePrompt(self.points, self.labels, self.box)
        return [(keys[0], first)] + [(k, self.others[k]) for k in keys[1:] if k in self.others]


def print_notice(message: str) -> None:
    """A notice to the user (not an error): one line on stderr, where a caller gives no ``notify``."""
    print(f"echosam: {message}", file=sys.stderr)


def structure_mask(lab: np.ndarray, key: str) -> np.ndarray:
    """The mask of ``key`` in a label frame (a binary 0/1 file counts as that structure)."""
    m = lab == get_structure(key).label
    if not m.any() and set(np.unique(lab).tolist()) <= {0, 1}:
        m = lab == 1
    return m


def _prompt_to_crop(sp: StructurePrompt, region, shape_hw) -> StructurePrompt:
    h, w = shape_hw
    x0, y0, x1, y1 = region.bbox
    where = f"the imaging fan's box (x {x0}..{x1}, y {y0}..{y1}); move it onto the fan, or use --region off"
    pts = sp.points
    if pts is not None:
        pts = np.asarray(pts, dtype=float).reshape(-1, 2)
        for x, y in pts:
            if not (0 <= round(x) < w and 0 <= round(y) < h):
                raise PromptError(f"Point (x={x:g}, y={y:g}) is outside the {w}x{h} image; place it on the image.")
            if not region.contains_xy(x, y):
                raise PromptError(f"Point (x={x:g}, y={y:g}) is outside {where}.")
        pts = region.to_crop_xy(pts)
    box = sp.box
    if box is not None:
        if any(not 0 <= round(v) < lim for v, lim in zip(box, (w, h, w, h))):
            raise PromptError(f"Box {tuple(box)} is outside the {w}x{h} image; box corners are cine pixels "
                              "(x = column, y = row) on the image.")
        if not region.meets_box(box):
            raise PromptError(f"Box {tuple(box)} is outside {where}.")
        box = region.box_to_crop(box)
    return StructurePrompt(pts, sp.labels, box)


def map_prompts(prompts: Prompts, region, shape_hw) -> Prompts:
    """Prompts in full-frame cine pixels -> the same prompts in the region's crop pixels (points shifted,
    boxes shifted and clipped; a mask file is cropped when it is read, see `apply_prompts`).
    A point off the frame, or a point/box off the fan's crop, is a PromptError."""
    first = _prompt_to_crop(StructurePrompt(prompts.points, prompts.labels, prompts.box), region, shape_hw)
    others = {k: _prompt_to_crop(sp, region, shape_hw) for k, sp in prompts.others.items()}
    return replace(prompts, points=first.points, labels=first.labels, box=first.box, others=others)


def zoom_to_prompts(fan, prompts: Prompts, loaded, keys, mask_labels=None, notify=None, seed=None):
    """The region a prompt-zoomed model (`echosam.zoom`) runs on: ``fan`` narrowed around the boxes (and their
    include points), the mask file's ``keys`` pixels (``mask_labels``, its frame as read, full frame) or the
    ``seed`` labels (full frame, `echosam.seeding`), or ``fan`` itself when they give no extent."""
    from .zoom import joint_extent, structure_extents, zoom_for

    labels = [lab for lab in (seed, mask_labels if loaded.prompted else None) if lab is not None]
    items = [(k, sp.box, sp.points, sp.labels, None) for k, sp in prompts.by_structure(keys)]
    items += [(k, None, None, None, lab == get_structure(k).label) for lab in labels for k in keys]
    region, notice = zoom_for(fan, loaded, joint_extent(structure_extents(items)))
    if notice:
        (notify or print_notice)(notice)
    return region


def apply_prompts(session, prompts: Prompts, device: str = "auto", region=None, mask_labels=None, seed=None) -> None:
    """Put ``prompts`` into a session (points/boxes on their structures, the mask file's frame ``mask_labels``
    (`pipeline.read_mask_frame`) on each structure it holds, else a seed from ``seed_model``). Nothing to do
    for a prompt-free model given no prompt. With a `FanRegion`, ``prompts`` and ``mask_labels`` are in
    full-frame pixels and the session runs on the region's crop."""
    keys = session.structures
    if region is not None:
        prompts = map_prompts(prompts, region, region.shape)
    for key, sp in prompts.by_structure(keys):
        if sp.points is not None or sp.box is not None:
            session.add_new_points_or_box(prompts.frame, key, sp.points, sp.labels, sp.box)
    if mask_labels is not None:
        lab = region.crop(mask_labels) if region is not None else mask_labels
        found = [k for k in keys if structure_mask(lab, k).any()]
        if not found:
            raise PromptError(f"Mask file {prompts.mask} has none of {', '.join(keys)} on frame {prompts.mask_frame}.")
        for k in found:
            session.set_mask(prompts.mask_frame, k, structure_mask(lab, k))
    if session.prompted and not any(session.key_frames.values()):
        from .seeding import seed_session
        seed_session(session, prompts, device, seed, region)
