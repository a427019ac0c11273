"""Which frames the user changed since EchoSAM last wrote them, told apart by fingerprints.

Every write records a digest of each (frame, structure) mask it wrote (`label_digests`), stored on
the input sequence (``EchoSAM.WrittenMasks``), so this survives saving and reloading the scene. On
every Propagate the controller reads every frame back (`find_edits`): a frame whose mask differs
from its digest was changed by the user (Segment Editor, "Edit this frame", any module) and becomes
a locked correction, whichever frame the browser shows.
"""
from __future__ import annotations

import zlib

import numpy as np

from ..structures import get_structure


def mask_digest(mask) -> str:
    """A short fingerprint of a binary mask (shape + CRC32 of its bits + pixel count)."""
    m = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    return f"{m.shape[0]}x{m.shape[1]}:{zlib.crc32(np.packbits(m).tobytes()):08x}:{int(m.sum())}"


def label_digests(labels: np.ndarray, structures, frames=None) -> dict:
    """``{frame: {structure: digest}}`` of a (T, H, W) label map (structures.py values)."""
    keys = [get_structure(s) for s in structures]
    frames = range(labels.shape[0]) if frames is None else frames
    return {int(t): {s.key: mask_digest(labels[t] == s.label) for s in keys} for t in frames}


def changed_structures(masks: dict, written: dict, frame: int) -> list:
    """The structures whose mask on ``frame`` differs from what EchoSAM wrote there.

    ``masks``: {structure: (H, W) bool} as the user left them; ``written``: `label_digests` of the
    last write. A structure with no record counts as changed when its mask is not empty."""
    record = written.get(int(frame), {})
    out = []
    for s, m in masks.items():
        key = get_structure(s).key
        if key in record:
            if mask_digest(m) != record[key]:
                out.append(key)
        elif np.any(m):
            out.append(key)
    return out


def find_edits(masks_by_frame: dict, written: dict) -> dict:
    """``{frame: {structure: mask}}`` of every (frame, structure) the user changed, from
    ``masks_by_frame`` = {frame: {structure: (H, W) bool}} read back from the scene."""
    out = {}
    for t, masks in sorted(masks_by_frame.items()):
        changed = changed_structures(masks, written, t)
        if changed:
            out[int(t)] = {s: masks[s] for s in changed}
    return out


def masks_of_labels(labels: np.ndarray, structures) -> dict:
    """(T, H, W) label map -> ``{frame: {structure: mask}}``."""
    keys = [get_structure(s) for s in structures]
    return {t: {s.key: labels[t] == s.label for s in keys} for t in range(labels.shape[0])}


def lock_plan(locked: dict, frame: int, structures: list) -> str:
    """"unlock" when the frame is locked for any selected structure, else "lock"."""
    return "unlock" if any(int(frame) in locked.get(s, []) for s in structures) else "lock"
