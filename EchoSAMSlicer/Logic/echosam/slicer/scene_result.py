"""The EchoSAM result as the scene holds it: the pixel spacing its volumes are measured with, its cardiac
analysis and LV curve, and what the panel shows of it (frame line, ED/ES frames, chart).

Split from `echosam.slicer.controller` so that the controller stays about runs and edits; it resolves
the input node and calls these. Functions take the input's browser (or its master sequence) and the
cine the caller already read, so no caller reads the cine twice. Nothing here changes a mask, prompt,
lock or undo step: `summary` only rewrites the LV curve nodes from the masks in the scene.
"""
from __future__ import annotations

from .. import mrml
from . import calibration, prompts as pr

ALL_STRUCTURES = ("lv", "myo", "la")


def spacing(seq, cine) -> calibration.Spacing:
    """The spacing to measure ``cine`` with: the calibration stored on its sequence ``seq``, else the image's."""
    return calibration.spacing_status(cine.spacing, mrml.get_json_attribute(seq, calibration.ATTRIBUTE))


def _spacing_fields(s: calibration.Spacing) -> dict:
    # the summary's spacing keys, with or without a result, so the panel reads one form
    return {"calibrated": s.calibrated, "spacing_mm": list(s.spacing_mm), "spacing_how": s.how}


def analyse(seq, labels, cine) -> tuple:
    """``(analysis, summary)`` of ``labels`` measured with `spacing`; the summary says which spacing."""
    from .. import cardiac
    s = spacing(seq, cine)
    analysis = cardiac.analyse(labels, spacing=s.spacing_mm, times_s=cine.frame_times, frames=cine.frames,
                               predicted=True)     # a model's labels, checked as `echosam segment` checks them
    summary = analysis.summary()
    summary.update(_spacing_fields(s))
    return analysis, summary


def write_curve(scene, seq, analysis, summary: dict) -> None:
    """Write the LV volume curve of ``analysis`` (table, plot, chart, anchored on ``seq``); its chart goes to
    ``summary["chart"]``."""
    nodes = mrml.write_lv_curve(scene, analysis.times_s, analysis.volume_al_ml, quantity="LV volume", unit="ml",
                                ed_frames=summary["ed_frames"], es_frames=summary["es_frames"],
                                ef=analysis.ef_percent, anchor=seq, calibrated=summary["calibrated"])
    summary["chart"] = nodes["chart"]


def summary(browser, cine) -> dict:
    """The cardiac summary of the result as it is in the scene (after a reload, an edit or a calibration),
    its LV curve rewritten; without a result, the spacing alone."""
    seq, seg_seq = browser.GetMasterSequenceNode(), mrml.find_segmentation_sequence(browser)
    if seg_seq is None:
        return _spacing_fields(spacing(seq, cine))
    labels = mrml.read_labels(browser, seg_seq, ALL_STRUCTURES, cine)
    analysis, out = analyse(seq, labels, cine)
    write_curve(browser.GetScene(), seq, analysis, out)
    return out


def has_result(browser) -> bool:
    return browser is not None and mrml.find_segmentation_sequence(browser) is not None


def frames_info(browser) -> dict:
    """What the panel's frame line shows: current frame, count, prompt frames, locked frames ({} without input)."""
    if browser is None:
        return {}
    seq = browser.GetMasterSequenceNode()
    stored = mrml.load_session_state(seq)["prompts"] or {}
    return {"current": max(browser.GetSelectedItemNumber(), 0), "n_frames": seq.GetNumberOfDataNodes(),
            "prompt_frames": pr.prompt_frames(stored), "locked": pr.locked_frames(stored, ALL_STRUCTURES)}


def phase_frames(browser, phase: str) -> list:
    """The ED (``phase`` "ed") or ES frames stored with the result."""
    state = mrml.load_session_state(browser.GetMasterSequenceNode())
    return state["ed_frames"] if phase == "ed" else state["es_frames"]


def curve_chart(browser):
    return browser.GetMasterSequenceNode().GetNodeReference(mrml.REF_CURVE_CHART) if browser else None
