"""What the panel shows, as plain values (no Qt): results rows, EF text, the frame line (current
frame, frames holding prompts, locked frames, unpropagated edits), the device list and which
buttons are enabled."""
from __future__ import annotations

import numpy as np

from ..cardiac_cycles import SPARSE_SYSTOLE_FRAMES
from ..device import DEVICES  # noqa: F401 (the panel offers every device)
from ..ef_check import reading_text
from ..structures import get_structure

UNCALIBRATED = "uncalibrated"


def _fmt(v, unit="", nd=1) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{float(v):.{nd}f}{unit}"


def results_rows(summary: dict) -> list:
    """(quantity, value) rows of the Results table: EDV, ESV, EF (means over beats), the model's known EF
    error when its checkpoint records one (``summary["ef_accuracy"]``), a row when systole spans too few
    frames for a sound EF (``summary["systole_frames"]``), then one row per beat. With
    ``summary["calibrated"]`` False the volume rows say *uncalibrated* (the pixel spacing is Slicer's 1 mm
    default, not a measured one); EF, a ratio, is unaffected by a uniform scale."""
    unit = "ml" if summary.get("calibrated", True) else f"ml, {UNCALIBRATED}"
    rows = [(f"EDV ({unit})", _fmt(summary.get("edv_ml"))), (f"ESV ({unit})", _fmt(summary.get("esv_ml"))),
            ("EF (%)", _fmt(summary.get("ef_percent")))]
    for i, b in enumerate(summary.get("beats", []), 1):
        cycle = "" if b.get("complete_cycle", True) else " (partial)"
        rows.append((f"Beat {i}: ED {b['ed_frame']} / ES {b['es_frame']}{cycle}",
                     f"{_fmt(b.get('edv_ml'))} / {_fmt(b.get('esv_ml'))} {unit}, EF {_fmt(b.get('ef_percent'), ' %')}"))
    if summary.get("ef_accuracy") and rows[2][1] != "-":
        rows.insert(3, ("EF: the model's known error", summary["ef_accuracy"]))
    check = summary.get("ef_check")
    if check and rows[2][1] != "-":                           # `echosam.ef_check.check_summary`
        efs = " / ".join(_fmt(v, " %") for v in [check["ef_percent"], *check["variant_ef_percent"]])
        verdict = {True: "steady", False: "depends on the box: check ED and ES"}.get(check["stable"], "not compared")
        changes = ", ".join(f"{100 * c:+.0f} %" for c in check["box_changes"])
        shown = check.get("reported_box_change") or 0.0
        verdict += f"; shown: {100 * shown:+.0f} %" if shown else "; shown: as drawn"
        rows.insert(3, (f"EF: the box as drawn, {changes}", f"{efs}: {verdict}"))
    n = summary.get("systole_frames")
    if n is not None and n < SPARSE_SYSTOLE_FRAMES and rows[2][1] != "-":     # `cardiac_cycles.sparse_systole_note`
        rows.insert(3, ("EF: few frames of systole", f"{n} frames from ED to ES: this EF tends to read low; "
                                                     "record at 25 frames/s or more"))
    return rows


def done_text(data: dict, summary: dict, checking: bool = False) -> str:
    """The status line after a run: corrections used, edits kept, calibration, notices, why there is no EF
    when there is none (an LV that drifted or gives no heart's EF: `echosam.cardiac.analyse`), an EF that
    depends on the box (`echosam.ef_check`), and, while ``checking``, that the check is running."""
    parts = ["Done."]
    if data.get("corrected"):
        parts.append(f"Corrections taken from frames {', '.join(map(str, data['corrected']))} (locked).")
    if summary.get("kept_edits"):
        parts.append(f"Frames {', '.join(map(str, summary['kept_edits']))} were edited while this ran and were "
                     "left as you edited them: press Propagate to use them.")
    if not summary.get("calibrated", True):
        parts.append("Volumes are uncalibrated (1 mm pixels): calibrate the spacing.")
    parts += [n[:1].upper() + n[1:] + ("" if n.endswith(".") else ".") for n in summary.get("notices", [])]
    if summary.get("ef_percent") is None and summary.get("message"):
        parts.append(summary["message"])
    if summary.get("ef_flag"):
        parts.append(summary["ef_flag"])
    elif (summary.get("ef_check") or {}).get("reported_box_change"):
        shown = reading_text(summary["ef_check"]["reported_box_change"])
        parts.append(f"The result is the middle of three readings: {shown}.")
    if checking:
        parts.append("Checking the EF against the box: two more readings, with the boxes 5 % larger and smaller; "
                     "if their EFs disagree, the middle one is kept (Cancel keeps this result)...")
    return " ".join(parts)


def ef_text(summary: dict) -> str:
    return _fmt(summary.get("ef_percent"), " %")


def compute_text(summary: dict) -> str:
    """The panel's line on how the result was computed, e.g. "Computed with: cpu bf16 autocast (amx_bf16),
    2 threads" (empty when the summary does not say: an undo, or a scene reloaded from disk)."""
    path = summary.get("compute_path")
    return f"Computed with: {path}" if path else ""


def _frames(d: dict) -> str:
    parts = [f"{get_structure(s).key.upper()} {', '.join(map(str, f))}" for s, f in sorted(d.items()) if f]
    return "; ".join(parts) or "none"


def frames_text(current: int, n_frames: int, prompt_frames: dict, locked: dict, edited=()) -> str:
    """One line: ``Frame 6 / 24 | prompts: LV 0 | locked: LV 5, 9 | edited, not yet propagated: 12``."""
    text = f"Frame {int(current)} / {max(int(n_frames) - 1, 0)} | prompts: {_frames(prompt_frames)} | " \
           f"locked: {_frames(locked)}"
    if edited:
        text += f" | edited, not yet propagated: {', '.join(map(str, sorted(edited)))}"
    return text


def button_states(has_input: bool, has_structures: bool, busy: bool, prompted: bool, weights_present: bool,
                  can_download: bool, has_result: bool, can_undo: bool = False) -> dict:
    """Enabled state of each action button (names as in the .ui)."""
    ready = has_input and has_structures and not busy
    return {"segmentButton": ready and weights_present,
            "propagateButton": ready and prompted and has_result and weights_present,
            "editFrameButton": has_input and has_result and not busy,
            "lockButton": ready and prompted and has_result,
            "undoButton": has_input and not busy and can_undo,
            "calibrateButton": has_input and not busy,
            "downloadButton": not busy and can_download,
            "useFileButton": not busy,
            "cancelButton": busy,
            "jumpEDButton": has_result, "jumpESButton": has_result, "showCurveButton": has_result}
