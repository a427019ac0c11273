"""The prompts of a cine, one dict in the ``echosam-prompts`` format (`PromptStore.to_dict`), held on
the input sequence node (``EchoSAM.Prompts``): the single source of truth for points, boxes and
corrections. The worker's `Session` is a cache rebuilt from it on every run (`session_prompts`);
the locked frames are derived from it (`locked_frames`) and saved next to it only as a copy.

Every change here returns a new dict (the input is never modified) and bumps the entry's version,
so the session re-runs only the frames the change affects.
"""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np

from ..errors import PromptError
from ..session.store import mask_to_rle
from ..structures import get_structure

FORMAT = "echosam-prompts"


def empty_prompts(n_frames: int, shape_hw, structures) -> dict:
    return {"format": FORMAT, "version": 1, "n_frames": int(n_frames), "shape": [int(s) for s in shape_hw],
            "structures": [get_structure(s).key for s in structures], "prompts": [], "counter": 0}


def usable_prompts(stored: dict, n_frames: int, shape_hw) -> dict:
    """The stored dict when it belongs to this cine, else an empty one (a new cine, or damaged)."""
    if (isinstance(stored, dict) and stored.get("format") == FORMAT and int(stored.get("n_frames", -1)) == n_frames
            and list(stored.get("shape", [])) == [int(s) for s in shape_hw]):
        return copy.deepcopy(stored)
    return empty_prompts(n_frames, shape_hw, [])


READING = "box_change"      # the reading the result is (`echosam.ef_check`): its boxes' change per side


def session_prompts(prompts: dict, structures) -> dict:
    """The part of ``prompts`` a session over ``structures`` takes (always a valid dict), its boxes scaled to
    the reading the result is (``prompts[READING]``, set when the middle of three readings was a changed box)."""
    keys = [get_structure(s).key for s in structures]
    out = copy.deepcopy(prompts)
    out["prompts"] = [p for p in prompts.get("prompts", []) if p.get("structure") in keys]
    out["structures"] = keys
    change = float(out.pop(READING, 0.0) or 0.0)
    return scaled_boxes(out, change) if change else out


def as_drawn(prompts: dict) -> dict:
    """``prompts`` read from the boxes as drawn (a new Segment reads the loop afresh)."""
    return {k: v for k, v in prompts.items() if k != READING}


def _next_version(d: dict) -> int:
    return max([int(d.get("counter", 0))] + [int(p.get("version", 0)) for p in d.get("prompts", [])]) + 1


def add_corrections(prompts: dict, corrections: dict) -> dict:
    """``corrections`` = {frame: {structure: (H, W) bool}} -> each becomes a locked mask entry,
    replacing any points/box of that (structure, frame). An empty mask is refused (use Undo)."""
    d = copy.deepcopy(prompts)
    for frame, masks in sorted(corrections.items()):
        for s, mask in sorted(masks.items()):
            key = get_structure(s).key
            if not np.any(mask):
                raise PromptError(f"The {get_structure(key).name} mask on frame {frame} was erased; draw it again, "
                                  "or press Undo to go back.")
            version = _next_version(d)
            d["prompts"] = [p for p in d["prompts"] if not (p.get("structure") == key and int(p["frame"]) == frame)]
            d["prompts"].append({"structure": key, "frame": int(frame), "version": version,
                                 "mask": mask_to_rle(np.asarray(mask, bool)), "seed": False})
            d["counter"] = version
            if key not in d.setdefault("structures", []):
                d["structures"].append(key)
    return d


def remove_locks(prompts: dict, frame: int, structures) -> dict:
    """Drop the corrected masks of ``structures`` on ``frame`` (the frame is recomputed next run)."""
    keys = {get_structure(s).key for s in structures}
    d = copy.deepcopy(prompts)
    d["prompts"] = [p for p in d["prompts"] if not (p.get("structure") in keys and int(p["frame"]) == int(frame)
                                                    and "mask" in p and not p.get("seed", False))]
    d["counter"] = _next_version(d)
    return d


def locked_frames(prompts: dict, structures=None) -> dict:
    """``{structure: sorted frames}`` holding a corrected (locked) mask."""
    keys = [get_structure(s).key for s in (structures if structures is not None else prompts.get("structures", []))]
    out = {k: set() for k in keys}
    for p in prompts.get("prompts", []):
        if "mask" in p and not p.get("seed", False) and p.get("structure") in out:
            out[p["structure"]].add(int(p["frame"]))
    return {k: sorted(v) for k, v in out.items()}


def prompt_frames(prompts: dict) -> dict:
    """``{structure: sorted frames}`` holding points or a box."""
    out: dict = {}
    for p in prompts.get("prompts", []):
        if "points" in p or "box" in p:
            out.setdefault(p["structure"], set()).add(int(p["frame"]))
    return {k: sorted(v) for k, v in out.items()}


def has_prompts(prompts: dict, structures) -> bool:
    keys = {get_structure(s).key for s in structures}
    return any(p.get("structure") in keys for p in prompts.get("prompts", []))


# ---- structures and markups -----------------------------------------------------------------------
def structures_from_flags(lv: bool, myo: bool, la: bool) -> list:
    keys = [k for k, on in (("lv", lv), ("myo", myo), ("la", la)) if on]
    if not keys:
        raise PromptError("Select at least one structure (LV, myocardium or LA).")
    return keys


def prompt_structure_key(prompt_structure: str, structures: list) -> str:
    """The key of the prompt structure chooser's value; it must be one of the selected structures."""
    key = get_structure(prompt_structure or "lv").key
    if key not in structures:
        raise PromptError(f"The prompt structure {get_structure(key).name} is not among the selected structures "
                          f"({', '.join(get_structure(s).name for s in structures)}); tick it, or choose another "
                          "prompt structure.")
    return key


def filter_prompts(prompts: dict, structures) -> dict:
    """Stored prompts restricted to ``structures`` (a new session may segment fewer structures)."""
    if not prompts or prompts.get("format") != "echosam-prompts":
        return {}
    keys = {get_structure(s).key for s in structures}
    out = copy.deepcopy(prompts)
    out["prompts"] = [p for p in prompts.get("prompts", []) if p.get("structure") in keys]
    out["structures"] = [s for s in prompts.get("structures", []) if s in keys]
    return out if out["prompts"] else {}


def merge_markup_prompts(prompts: dict, frame: int, structure: str, markup_prompts: list) -> Optional[dict]:
    """Make the (``structure``, ``frame``) entry of a prompts dict hold exactly the markups' points
    and box. Returns the new dict, or None when there are no markups or nothing changes.

    Other structures and frames keep their prompts. A frame locked for that structure (a corrected
    mask) refuses points: the user must unlock it first."""
    key, frame = get_structure(structure).key, int(frame)
    points = [p for p in markup_prompts if p["type"] == "point"]
    boxes = [p for p in markup_prompts if p["type"] == "box"]
    if not points and not boxes:
        return None
    d = copy.deepcopy(prompts)
    items = d.setdefault("prompts", [])
    old = next((p for p in items if p.get("structure") == key and int(p.get("frame", -1)) == frame), None)
    if old is not None and "mask" in old and not old.get("seed", False):
        raise PromptError(f"Frame {frame} of {get_structure(key).name} holds a corrected mask (locked): unlock it "
                          "(Lock / unlock frame) before placing points or a box there.")
    new_points = [[float(v) for v in p["xy"]] for p in points]
    new_labels = [int(p["label"]) for p in points]
    new_box = [float(v) for v in boxes[-1]["box"]] if boxes else None
    if old is not None and "mask" not in old:
        same_points = (len(old.get("points", [])) == len(new_points)
                       and np.allclose(np.reshape(old.get("points", []), (-1, 2)), np.reshape(new_points, (-1, 2)))
                       and list(old.get("labels", [])) == new_labels)
        same_box = (old.get("box") is None and new_box is None) or (
            old.get("box") is not None and new_box is not None and np.allclose(old["box"], new_box))
        if same_points and same_box:
            return None
    counter = max([int(d.get("counter", 0))] + [int(p.get("version", 0)) for p in items]) + 1
    item = {"structure": key, "frame": frame, "version": counter}
    if new_points:
        item["points"], item["labels"] = new_points, new_labels
    if new_box is not None:
        item["box"] = new_box
    d["prompts"] = [p for p in items if p is not old] + [item]
    d["counter"] = counter
    return d


def reconcile_prompt_structure(prompt_structure: str, ticked: list) -> str:
    """The prompt structure chooser's value made consistent with the ticked structures: kept when it is
    ticked, else the first ticked one (the value as given when nothing is ticked)."""
    ticked_keys = [get_structure(t).key for t in ticked]
    key = get_structure(prompt_structure or "lv").key
    if key in ticked_keys or not ticked_keys:
        return prompt_structure
    return ticked_keys[0].upper()


def ef_checkable(prompts: dict, structures) -> bool:
    """Whether the EF check (`echosam.ef_check`) applies to a run of ``prompts`` over ``structures``: at least
    one box, and no mask (a user's correction decides those frames, not the boxes)."""
    items = session_prompts(prompts, structures)["prompts"]
    return any(p.get("box") is not None for p in items) and not any("mask" in p for p in items)


def scaled_boxes(prompts: dict, change: float) -> dict:
    """``prompts`` with every box grown (``change`` > 0) or shrunk about its centre by ``change`` of its width and
    height per side (`echosam.ef_check.scaled_box`), clipped to the image; points stay where the user put them."""
    from ..ef_check import scaled_box

    d = copy.deepcopy(prompts)
    for p in d["prompts"]:
        if p.get("box") is not None:
            p["box"] = list(scaled_box(p["box"], change, d["shape"]))
    return d
