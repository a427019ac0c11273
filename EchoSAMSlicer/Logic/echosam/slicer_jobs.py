"""Worker jobs specific to the Slicer panel (run on the `echosam.worker.Worker` thread, submitted by
`echosam.slicer_logic.Controller`): restore stored prompts, apply markup prompts of one
structure on one frame, apply the user's edited masks as corrections, lock / unlock a frame.

`echosam.slicer_logic` re-exports every job here.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import worker as wk
from .errors import PromptError
from .slicer_panel import markup_prompt_plan
from .structures import get_structure


def job_restore_prompts(state, progress, cancel, prompts: dict):
    session = wk.session_of(state)
    if session.prompted and prompts:
        session.load_prompts_dict(prompts)


def job_markup_prompts(state, progress, cancel, frame: int, structure: str, prompts: list) -> bool:
    """Markups prompts of one structure on one frame into the session, replacing that frame's points and
    box (`Session.add_new_points_or_box` with ``clear_old_points``). False when nothing changed."""
    session = wk.session_of(state)
    if not session.prompted:
        return False
    plan = markup_prompt_plan(prompts)
    if plan is None:
        return False
    points, labels, box = plan
    return session.add_new_points_or_box(frame, structure, points, labels, box, clear_old_points=True)


def job_corrections(state, progress, cancel, frame: int, masks: dict) -> list:
    session = wk.session_of(state)
    for key, mask in masks.items():
        if not np.any(mask):
            raise PromptError(f"The {get_structure(key).name} mask on frame {frame} was erased; draw it again, or "
                              "press Undo to go back.")
        session.set_mask(frame, key, mask)
    return sorted(masks)


def job_lock(state, progress, cancel, frame: int, masks: Optional[dict], structures: list) -> dict:
    """Lock ``frame`` with ``masks`` ({structure: mask}) or, with ``masks`` None, unlock it."""
    session = wk.session_of(state)
    if masks is None:
        for s in structures:
            session.unlock(frame, s)
    else:
        for s, m in masks.items():
            session.set_mask(frame, s, m)
    return session.locked_frames
