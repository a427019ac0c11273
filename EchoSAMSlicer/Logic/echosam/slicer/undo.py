"""EchoSAM's own undo stack, saved on the input sequence node (``EchoSAM.UndoStack``) so it
survives a scene save and reload.

Slicer's scene undo is off by default (``vtkMRMLScene::SetUndoOn``), so ``SaveStateForUndo`` records
nothing there; EchoSAM therefore keeps its own. Each write pushes one step: the prompts and the
written-mask fingerprints as they were, and the masks of every frame the write changed, as the scene
held them (user edits included). Undo puts all of that back, so the scene is exactly as it was before
the write: a frame the user had edited shows the edit again, still waiting to be propagated.
"""
from __future__ import annotations

import numpy as np

from ..session.store import mask_to_rle, rle_to_mask
from ..structures import get_structure

ATTRIBUTE = "UndoStack"
MAX_STEPS = 10


def make_step(what: str, prompts: dict, written: dict, before: np.ndarray, after: np.ndarray, structures) -> dict:
    """One undo step: ``before`` / ``after`` are the (T, H, W) label maps of the scene around a write."""
    frames = {}
    for t in np.flatnonzero((before != after).reshape(before.shape[0], -1).any(axis=1)):
        frames[str(int(t))] = {get_structure(s).key: mask_to_rle(before[t] == get_structure(s).label)
                               for s in structures}
    return {"what": what, "prompts": prompts, "written": {str(k): v for k, v in written.items()}, "frames": frames,
            "structures": [get_structure(s).key for s in structures]}


def push(stack: list, step: dict) -> list:
    return (list(stack or []) + [step])[-MAX_STEPS:]


def restore_labels(step: dict, labels: np.ndarray) -> tuple:
    """Apply a step's saved frames to a copy of ``labels``; returns ``(labels, frames)``."""
    out = labels.copy()
    frames = sorted(int(t) for t in step["frames"])
    for t in frames:
        row = np.zeros(out.shape[1:], np.uint8)
        for s, rle in step["frames"][str(t)].items():
            row[rle_to_mask(rle, out.shape[1:])] = get_structure(s).label
        out[t] = row
    return out, frames
