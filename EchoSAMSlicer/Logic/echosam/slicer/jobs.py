"""Worker jobs of the Slicer panel (run on the `echosam.worker.Worker` thread, submitted by
`echosam.slicer.controller.Controller`).

The worker's state is the only place the session lives: `job_sync_session` rebuilds it when the
cine, model or structures change (``state["session_key"]``) and, every run, loads the prompts the
controller read from the scene (the source of truth), so the session never holds prompts the scene
does not. Unchanged entries keep their versions: only affected frames are recomputed.
"""
from __future__ import annotations

from .. import worker as wk


def job_sync_session(state, progress, cancel, key, cine, structures, prompts: dict, precision: str = "auto") -> bool:
    """Make ``state["session"]`` the session of ``key`` holding exactly ``prompts`` (``precision``: "auto"
    or "fp32", part of ``key``); True if rebuilt."""
    rebuilt = state.get("session_key") != key or "session" not in state
    if rebuilt:
        state.pop("session_key", None)
        wk.job_new_session(state, progress, cancel, cine=cine, structures=structures, precision=precision)
        state["session_key"] = key
    session = state["session"]
    if session.prompted and prompts is not None:
        session.load_prompts_dict(prompts)
    return rebuilt
