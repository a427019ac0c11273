"""Worker jobs of the Slicer panel (run on the `echosam.worker.Worker` thread, submitted by
`echosam.slicer.controller.Controller`).

The worker's state is the only place the session lives: `job_sync_session` rebuilds it when the
cine, model or structures change (``state["session_key"]``) and, every run, loads the prompts the
controller read from the scene (the source of truth), so the session never holds prompts the scene
does not. Unchanged entries keep their versions: only affected frames are recomputed.

The session runs on the cine's ultrasound region (`echosam.slicer.region`), as `echosam segment` does:
the fan is found once per cine, prompts are mapped into its crop, and `echosam.worker.job_result` maps
the labels back onto the full frame. A prompted model whose config asks for a companion (`echosam.companion`)
gets it as `echosam segment` does: read once per fan and structures, carried onto every session's crop.
"""
from __future__ import annotations

from .. import worker as wk
from ..errors import ModelError


def job_sync_session(state, progress, cancel, key, cine, structures, prompts: dict, precision: str = "auto",
                     orientation: str = "standard") -> bool:
    """Make ``state["session"]`` the session of ``key`` holding exactly ``prompts`` (full-frame pixels;
    ``precision``: "auto" or "fp32"; ``orientation``: how the view is displayed, `echosam.orientation`; both part
    of ``key``) on the cine's region; True if rebuilt."""
    from ..fan import find_region
    from ..orientation import orient
    from .region import crop_prompts, region_for

    if "loaded" not in state:
        raise ModelError("No model is loaded; choose a model first.")
    fan_key = key[:3] + (orientation,)              # the fan of this cine (sequence, frames, size), found once
    if state.get("fan_key") != fan_key:
        notes: list = []
        state["fan"] = orient(find_region(cine), cine, orientation, device=str(state["loaded"].device),
                              notify=notes.append)
        state["fan_key"], state["orientation_notices"] = fan_key, tuple(notes)
    second_notes = _read_companion(state, cine, structures, precision, fan_key)
    region, notices = region_for(state["fan"], state["loaded"], prompts, structures)
    state["region_notices"] = tuple(state.get("orientation_notices", ())) + tuple(notices) + second_notes
    crop_key = _crop_key(key, region)
    session_prompts = crop_prompts(prompts, region) if prompts is not None else None
    rebuilt = state.get("session_key") != crop_key or "session" not in state
    if rebuilt:
        state.pop("session_key", None)
        wk.job_new_session(state, progress, cancel, cine=region.crop_cine(cine), structures=structures,
                           precision=precision, companion=_companion_on(state, region))
        state["session_key"], state["region"] = crop_key, region
    session = state["session"]
    if session.prompted and session_prompts is not None:
        session.load_prompts_dict(session_prompts)
    return rebuilt


def _read_companion(state, cine, structures, precision: str, fan_key: tuple) -> tuple:
    """Read the companion of a prompted model (`echosam.companion.read_fan`) on the fan, once per fan, model and
    structures (``state["second"]``); its notices, the first time."""
    from ..companion import read_fan

    loaded = state["loaded"]
    key = fan_key + (id(loaded), tuple(structures))
    if not loaded.prompted or state.get("second_key") == key:
        return ()
    notes: list = []
    state["second"] = read_fan(loaded, state["fan"], state["fan"].crop_cine(cine), list(structures),
                               str(loaded.device), precision, notes.append)
    state["second_key"] = key
    return tuple(notes)


def _companion_on(state, region):
    second = state.get("second") if state["loaded"].prompted else None
    return second.on(region) if second is not None else None


def _crop_key(key: tuple, region) -> tuple:
    """The session's key on ``region``: a prompt that moves the crop rebuilds the session."""
    return key + (region.bbox, tuple(region.zoom["box"]) if region.zoom else None)


def job_ef_check(state, progress, cancel, key, cine, structures, prompts: dict, spacing_mm,
                 precision: str = "auto") -> dict:
    """The two more readings of `echosam.ef_check`: the loop segmented again with every box of ``prompts``
    (full-frame pixels, as drawn) `BOX_CHANGE` larger and smaller per side, each on a session of its own on the
    region those boxes give, as `echosam segment` runs them; a changed box that cannot run (off the fan) is left
    out. When the middle reading is a changed box, its session becomes the panel's (a later correction
    propagates from it; ``key``: the run's session key). ``{"runs": [(change, EF percent or nan)], the boxes as
    given first; "result": the middle reading's `SegmentationResult`, None when it is the boxes as given}``."""
    from ..cardiac import analyse
    from ..ef_check import read_three
    from ..errors import PromptError
    from ..session import Session
    from .prompts import scaled_boxes
    from .region import crop_prompts, region_for

    def read(change):
        scaled = scaled_boxes(prompts, change)
        try:
            region, _ = region_for(state["fan"], state["loaded"], scaled, structures)
            session_prompts = crop_prompts(scaled, region)
        except PromptError:
            return None
        session = Session(region.crop_cine(cine), state["loaded"], structures=tuple(structures), precision=precision,
                          companion=_companion_on(state, region))
        session.load_prompts_dict(session_prompts)
        session.encode(progress=progress, cancel=cancel)
        session.segment(progress=progress, cancel=cancel)
        return session, region

    def ef(reading) -> float:
        session, region = reading
        return analyse(region.uncrop(session.labels), spacing=spacing_mm, times_s=cine.frame_times,
                       frames=cine.frames, predicted=True).ef_percent

    chosen, check = read_three((wk.session_of(state), state["region"]), read, ef)
    runs = [(0.0, check.ef_percent)] + list(zip(check.changes, check.variant_ef_percent))
    if not check.reported_change:
        return {"runs": runs, "result": None}
    state["session"], state["region"] = chosen
    state["session_key"] = _crop_key(key, state["region"])
    return {"runs": runs, "result": wk.job_result(state, progress, cancel)}
