"""The Slicer panel's pure decisions (no Qt, no ``slicer``, no worker): tested headless.

- model chooser facts: where a model's weights are (bundled / cached / missing / a file), its
  license, what "Use a checkpoint file I already have..." should do with a picked file;
- prompts per (frame, structure): markups on the current frame replace that frame's points/box of
  the chosen *prompt structure* only (other structures and frames keep theirs);
- which structures the user edited on a frame (digests of what EchoSAM last wrote, stored on the
  input sequence so this survives saving and reloading the scene);
- what the panel shows: results rows, EF text, which buttons are enabled.

`echosam.slicer_logic` re-exports every public name here.
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from . import model_zoo
from .checkpoints import OFFICIAL_SUFFIXES, OWN_SUFFIXES, checkpoint_kind  # noqa: F401 (re-exported)
from .errors import CheckpointError, PromptError
from .models.registry import FAMILIES, FAMILY_NAMES, is_prompted
from .structures import get_structure

FILE_FAMILIES = FAMILY_NAMES                      # families an official .pth can be loaded as


# ---- models --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """What the chooser shows about a model spec (a Models.json name, or a checkpoint file path)."""

    spec: str
    title: str
    family: str
    prompted: bool
    license: str
    status: str            # "bundled", "cached", "missing", "file" or "file missing"
    can_download: bool
    text: str              # one line for the panel
    tooltip: str = ""

    @property
    def weights_present(self) -> bool:
        return self.status in ("bundled", "cached", "file")


def is_file_spec(spec: str) -> bool:
    """True when ``spec`` names a checkpoint file rather than a Models.json entry."""
    return checkpoint_kind(spec) is not None


def model_info(spec: str, family: str = "") -> ModelInfo:
    """Facts for the chooser. Raises `ModelError` for an unknown registry name."""
    spec = str(spec)
    if is_file_spec(spec):
        p = Path(spec)
        fam = family or "?"
        if checkpoint_kind(p) == "own" and p.with_suffix(".json").is_file():
            from .checkpoints import read_checkpoint_meta   # JSON only, no torch
            try:
                fam = read_checkpoint_meta(p)["family"]
            except CheckpointError:
                fam = "?"
        status = "file" if p.is_file() else "file missing"
        prompted = fam in FAMILIES and is_prompted(fam)
        where = "checkpoint file" if status == "file" else "FILE NOT FOUND"
        text = f"{p.name} ({fam}) - {where} - license: as published by its source"
        return ModelInfo(spec, p.name, fam, prompted, "", status, False, text, str(p))
    entry = model_zoo.get_entry(spec)
    if entry.bundled:
        status = "bundled" if model_zoo.is_available(entry) else "missing"
    else:
        status = "cached" if model_zoo.is_available(entry) else "missing"
    words = {"bundled": "weights bundled", "cached": "weights downloaded",
             "missing": "weights missing: press Download" if entry.url else "weights missing"}
    text = f"{entry.title} - {entry.input_size} px - {words[status]} - license: {entry.license or 'unknown'}"
    tip = entry.description + (f"\nFile: {model_zoo.local_path(entry)}" if status != "missing" else "")
    return ModelInfo(spec, entry.title, entry.family, entry.prompted, entry.license, status,
                     bool(entry.url) and not entry.bundled and status == "missing", text, tip)


@dataclass(frozen=True)
class UseFilePlan:
    """What to do with a file picked by "Use a checkpoint file I already have...".

    ``action``: "register" (the selected Models.json entry's own file: SHA256 check + copy into the
    cache; the caller asks first), "own" (an EchoSAM .safetensors/.json checkpoint, loaded as is) or
    "official" (a PyTorch .pth: the user chooses ``family``, default ``family``)."""

    action: str
    path: str
    entry_name: str = ""
    family: str = ""
    message: str = ""


def plan_use_file(path, entry: Optional[model_zoo.ModelEntry] = None) -> UseFilePlan:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise CheckpointError(f"{p} does not exist or is not a file; choose the checkpoint file itself.")
    suffix, kind = p.suffix.lower(), checkpoint_kind(p)
    if kind is None:
        raise CheckpointError(f"{p.name} is not a checkpoint EchoSAM can read: use an EchoSAM .safetensors (with its "
                              ".json) or an official PyTorch .pth/.pt file.")
    if entry is not None and not entry.bundled and suffix == Path(entry.file).suffix.lower():
        check = "its SHA256 is checked" if entry.sha256 else "no published SHA256 to check it against"
        return UseFilePlan("register", str(p), entry.name, entry.family,
                           f"Use {p.name} as the weights of '{entry.title}'? It is copied into {model_zoo.cache_dir()} "
                           f"({check}). Choose No to load it as a separate model instead.")
    if kind == "own":
        weights, config = (p.with_suffix(".safetensors"), p.with_suffix(".json"))
        missing = [q.name for q in (weights, config) if not q.is_file()]
        if missing:
            raise CheckpointError(f"An EchoSAM checkpoint is a .safetensors file with its .json next to it; "
                                  f"{', '.join(missing)} is missing in {p.parent}.")
        return UseFilePlan("own", str(weights))
    default = entry.family if entry is not None and entry.family in FILE_FAMILIES else "memsam"
    return UseFilePlan("official", str(p), family=default,
                       message=f"{p.name} is an official PyTorch checkpoint: which model family is it?")


# ---- structures and prompts ----------------------------------------------------------------------
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


def markup_prompt_plan(markup_prompts: list) -> Optional[tuple]:
    """Markups of one frame -> ``(points (N, 2) or None, labels (N,) or None, box or None)`` for
    `Session.add_new_points_or_box`; None when there are no markups. The last ROI is the box."""
    points = [p for p in markup_prompts if p["type"] == "point"]
    boxes = [p for p in markup_prompts if p["type"] == "box"]
    if not points and not boxes:
        return None
    pts = [[float(v) for v in p["xy"]] for p in points] or None
    labels = [int(p["label"]) for p in points] or None
    box = [float(v) for v in boxes[-1]["box"]] if boxes else None
    return pts, labels, box


# ---- which structures the user edited ----------------------------------------------------------
def mask_digest(mask) -> str:
    """A short fingerprint of a binary mask (shape + CRC32 of its bits)."""
    m = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    return f"{m.shape[0]}x{m.shape[1]}:{zlib.crc32(np.packbits(m).tobytes()):08x}:{int(m.sum())}"


def label_digests(labels: np.ndarray, structures, frames=None) -> dict:
    """``{frame: {structure: digest}}`` of a (T, H, W) label map, for `changed_structures` later."""
    keys = [get_structure(s) for s in structures]
    frames = range(labels.shape[0]) if frames is None else frames
    return {int(t): {s.key: mask_digest(labels[t] == s.label) for s in keys} for t in frames}


def changed_structures(masks: dict, written: dict, frame: int) -> list:
    """The structures whose mask on ``frame`` differs from what EchoSAM wrote there.

    ``masks``: {structure: (H, W) bool} as the user left them; ``written``: `label_digests` of the
    last result. A structure with no record counts as changed when its mask is not empty."""
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


def lock_plan(locked: dict, frame: int, structures: list) -> str:
    """"unlock" when the frame is locked for any selected structure, else "lock"."""
    return "unlock" if any(int(frame) in locked.get(s, []) for s in structures) else "lock"


# ---- results in the panel ----------------------------------------------------------------------
def _fmt(v, unit="", nd=1) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{float(v):.{nd}f}{unit}"


def results_rows(summary: dict) -> list:
    """(quantity, value) rows of the Results table: EDV, ESV, EF (means over beats), then one row per
    beat. The ED/ES frame numbers are shown above the table, next to their Go to buttons."""
    rows = [("EDV (ml)", _fmt(summary.get("edv_ml"))), ("ESV (ml)", _fmt(summary.get("esv_ml"))),
            ("EF (%)", _fmt(summary.get("ef_percent")))]
    for i, b in enumerate(summary.get("beats", []), 1):
        cycle = "" if b.get("complete_cycle", True) else " (partial)"
        rows.append((f"Beat {i}: ED {b['ed_frame']} / ES {b['es_frame']}{cycle}",
                     f"{_fmt(b.get('edv_ml'))} / {_fmt(b.get('esv_ml'))} ml, EF {_fmt(b.get('ef_percent'), ' %')}"))
    return rows


def ef_text(summary: dict) -> str:
    return _fmt(summary.get("ef_percent"), " %")


def button_states(has_input: bool, has_structures: bool, busy: bool, prompted: bool, weights_present: bool,
                  can_download: bool, has_result: bool) -> dict:
    """Enabled state of each action button (names as in the .ui)."""
    ready = has_input and has_structures and not busy
    return {"segmentButton": ready and weights_present,
            "propagateButton": ready and prompted and has_result,
            "lockButton": ready and prompted and has_result,
            "undoButton": ready and prompted and has_result,
            "downloadButton": not busy and can_download,
            "useFileButton": not busy,
            "cancelButton": busy,
            "jumpEDButton": has_result, "jumpESButton": has_result, "showCurveButton": has_result}
