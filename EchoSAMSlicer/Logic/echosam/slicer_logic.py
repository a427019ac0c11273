"""What the Slicer module decides and does, without Qt: tested headless on real MRML nodes.

The module file (``EchoSAMSlicer.py``) is thin glue: it reads widgets, calls the `Controller`
here, and shows the `Action` each worker message turns into. This module holds:

- model chooser facts: where a model's weights are (bundled / cached / missing / a file), its
  license, what "Use a checkpoint file I already have..." should do with a picked file;
- prompts per (frame, structure): markups on the current frame replace that frame's points/box of
  the chosen *prompt structure* only (other structures and frames keep theirs);
- which structures the user edited on a frame (digests of what EchoSAM last wrote, stored on the
  input sequence so this survives saving and reloading the scene);
- `RunTracker`: the jobs of one user action (a *run*) and what each worker message means for it;
- `Controller`: submits runs to the `echosam.worker.Worker` and applies results to MRML on the
  caller's (main) thread when `Controller.poll` is called from a timer.

Only ``echosam.mrml`` touches Slicer classes; nothing here imports Qt, ``slicer`` or torch.
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import model_zoo, worker as wk
from .errors import CheckpointError, EchoSAMError, PromptError
from .structures import get_structure

FILE_FAMILIES = model_zoo.FAMILIES                # families an official .pth can be loaded as
OWN_SUFFIXES = (".safetensors", ".json")
OFFICIAL_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


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
    return Path(str(spec)).suffix.lower() in OWN_SUFFIXES + OFFICIAL_SUFFIXES


def model_info(spec: str, family: str = "") -> ModelInfo:
    """Facts for the chooser. Raises `ModelError` for an unknown registry name."""
    spec = str(spec)
    if is_file_spec(spec):
        p = Path(spec)
        fam = family or "?"
        if p.suffix.lower() in OWN_SUFFIXES and p.with_suffix(".json").is_file():
            from .checkpoints import read_checkpoint_meta   # JSON only, no torch
            try:
                fam = read_checkpoint_meta(p)["family"]
            except CheckpointError:
                fam = "?"
        status = "file" if p.is_file() else "file missing"
        prompted = fam in ("memsam", "sam")
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
    suffix = p.suffix.lower()
    if suffix not in OWN_SUFFIXES + OFFICIAL_SUFFIXES:
        raise CheckpointError(f"{p.name} is not a checkpoint EchoSAM can read: use an EchoSAM .safetensors (with its "
                              ".json) or an official PyTorch .pth/.pt file.")
    if entry is not None and not entry.bundled and suffix == Path(entry.file).suffix.lower():
        check = "its SHA256 is checked" if entry.sha256 else "no published SHA256 to check it against"
        return UseFilePlan("register", str(p), entry.name, entry.family,
                           f"Use {p.name} as the weights of '{entry.title}'? It is copied into {model_zoo.cache_dir()} "
                           f"({check}). Choose No to load it as a separate model instead.")
    if suffix in OWN_SUFFIXES:
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


# ---- runs: the jobs of one user action and what their messages mean -------------------------------
STEP_NAMES = {"load": "Loading model", "session": "Preparing the cine", "restore": "Restoring prompts",
              "prompts": "Applying prompts", "corrections": "Applying corrections", "encode": "Encoding frames",
              "propagate": "Propagating", "segment_auto": "Segmenting", "result": "Collecting the result",
              "lock": "Locking", "unlock": "Unlocking", "undo": "Undoing", "download": "Downloading",
              "use_file": "Checking the file"}


@dataclass
class Run:
    """One user action: ``kind`` (segment, lock, undo, download, use_file), its jobs' roles and the
    role whose result finishes it. ``data`` keeps what the result is applied to (input node, ...)."""

    kind: str
    roles: dict = field(default_factory=dict)        # job id -> role
    final: str = "result"
    data: dict = field(default_factory=dict)
    done_roles: list = field(default_factory=list)
    finished: bool = False


@dataclass
class Action:
    """What the panel does for one worker message. ``kind``: progress, result, error, cancelled or
    ignore. For progress, ``bar_value`` / ``bar_max`` / ``bar_format`` fit a QProgressBar (ints)."""

    kind: str
    run: Optional[Run] = None
    role: str = ""
    text: str = ""
    details: str = ""
    value: Any = None
    bar_value: int = 0
    bar_max: int = 0
    bar_format: str = ""


def progress_action(run: Run, role: str, msg: wk.Message) -> Action:
    step = STEP_NAMES.get(role, role)
    if role in ("download", "use_file") and msg.total > 1:
        mb = f"{msg.done / 1e6:.1f} / {msg.total / 1e6:.1f} MB"
        per = int(1000 * msg.done / max(msg.total, 1))
        return Action("progress", run, role, f"{step}: {mb}", bar_value=per, bar_max=1000, bar_format=f"{mb} (%p%)")
    if msg.total > 1 or role in ("encode", "propagate", "segment_auto"):
        return Action("progress", run, role, f"{step}: {msg.done}/{msg.total} frames", bar_value=msg.done,
                      bar_max=max(msg.total, 1), bar_format=f"{step}: {msg.done}/{msg.total} frames")
    return Action("progress", run, role, f"{step}...", bar_value=0, bar_max=0, bar_format=step)


class RunTracker:
    """Maps worker messages to `Action` s; after an error or a cancel the run's remaining messages
    are ignored (the caller drops its queued jobs with ``Worker.cancel()``)."""

    def __init__(self) -> None:
        self._by_job: dict = {}

    def add(self, run: Run) -> Run:
        for jid in run.roles:
            self._by_job[jid] = run
        return run

    @property
    def active(self) -> list:
        return [r for r in {id(r): r for r in self._by_job.values()}.values() if not r.finished]

    def handle(self, msg: wk.Message) -> Action:
        run = self._by_job.get(msg.job_id)
        if run is None or run.finished:
            if msg.kind != wk.PROGRESS:
                self._by_job.pop(msg.job_id, None)
            return Action("ignore")
        role = run.roles[msg.job_id]
        if msg.kind == wk.PROGRESS:
            return progress_action(run, role, msg)
        self._by_job.pop(msg.job_id, None)
        if msg.kind == wk.RESULT:
            run.done_roles.append(role)
            if role != run.final:
                return Action("progress", run, role, STEP_NAMES.get(role, role) + ": done", bar_max=0)
            run.finished = True
            return Action("result", run, role, value=msg.value)
        run.finished = True
        if msg.kind == wk.CANCELLED:
            return Action("cancelled", run, role, "Cancelled. Frames already computed are kept for the next run.")
        return Action("error", run, role, msg.text, details=msg.details)


# ---- worker jobs specific to the panel --------------------------------------------------------
def job_restore_prompts(state, progress, cancel, prompts: dict):
    session = wk._session(state)
    if session.prompted and prompts:
        session.load_prompts_dict(prompts)


def job_markup_prompts(state, progress, cancel, frame: int, structure: str, prompts: list) -> bool:
    """Markups prompts of one structure on one frame into the session (replacing that entry)."""
    session = wk._session(state)
    if not session.prompted or not prompts:
        return False
    new = merge_markup_prompts(session.prompts_to_dict(), frame, structure, prompts)
    if new is not None:
        session.load_prompts_dict(new)
    return new is not None


def job_corrections(state, progress, cancel, frame: int, masks: dict) -> list:
    session = wk._session(state)
    for key, mask in masks.items():
        if not np.any(mask):
            raise PromptError(f"The {get_structure(key).name} mask on frame {frame} was erased; draw it again, or "
                              "press Undo to go back.")
        session.set_mask(frame, key, mask)
    return sorted(masks)


def job_lock(state, progress, cancel, frame: int, masks: Optional[dict], structures: list) -> dict:
    """Lock ``frame`` with ``masks`` ({structure: mask}) or, with ``masks`` None, unlock it."""
    session = wk._session(state)
    if masks is None:
        for s in structures:
            session.unlock(frame, s)
    else:
        for s, m in masks.items():
            session.set_mask(frame, s, m)
    return session.locked_frames


# ---- the controller ------------------------------------------------------------------------------
class Controller:
    """Submits runs to one persistent worker and applies their results to MRML (call `poll` on the
    main thread). Methods take MRML nodes as arguments and raise `EchoSAMError` for user mistakes."""

    def __init__(self) -> None:
        self._worker: Optional[wk.Worker] = None
        self.tracker = RunTracker()
        self.cine = None
        self.session_key = None
        self.prompted = True

    # ---- worker ----
    @property
    def worker(self) -> wk.Worker:
        if self._worker is None:
            self._worker = wk.Worker()
        return self._worker

    @property
    def busy(self) -> bool:
        return self._worker is not None and self._worker.busy

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None
        self.session_key = None

    def _submit(self, run: Run, steps: list) -> Run:
        for role, fn, kwargs in steps:
            run.roles[self.worker.submit(role, fn, **kwargs)] = role
        return self.tracker.add(run)

    # ---- inputs ----
    @staticmethod
    def browser_of(node):
        from . import mrml
        from .errors import CineError
        try:
            return mrml.resolve_input(node)[0]
        except CineError:
            return None

    def _browser(self, node):
        browser = self.browser_of(node)
        if browser is None:
            raise EchoSAMError("EchoSAM writes its result as a segmentation sequence: select a sequence browser "
                               "(load the cine as a sequence, e.g. DICOM ultrasound multi-frame or .seq.nrrd).")
        return browser

    def has_result(self, node) -> bool:
        from . import mrml
        browser = self.browser_of(node) if node is not None else None
        return browser is not None and mrml.find_segmentation_sequence(browser) is not None

    def state_of(self, node) -> dict:
        from . import mrml
        return mrml.load_session_state(self._browser(node).GetMasterSequenceNode())

    # ---- runs ----
    def submit_segmentation(self, input_node, spec: str, device: str, structures: list, frame: int = 0,
                            prompt_structure: str = "lv", include=None, exclude=None, roi=None,
                            family: str = "", from_edit: bool = False) -> Run:
        """Segment (markups on ``frame`` for ``prompt_structure``) or, with ``from_edit``, re-propagate
        with the user's edit of ``frame`` as a correction of each structure whose mask changed."""
        from . import mrml
        browser = self._browser(input_node)
        structures = [get_structure(s).key for s in structures]
        key = (input_node.GetID(), str(spec), device, family or "", tuple(structures))
        info = model_info(spec, family)
        self.prompted = info.prompted
        if self.session_key != key or self.cine is None:
            self.cine, new_session = mrml.cine_from_sequence(browser), True
        else:
            new_session = False
        seq = browser.GetMasterSequenceNode()
        saved = mrml.load_session_state(seq)
        steps = [("load", wk.job_load_model, {"spec": str(spec), "device": device, "family": family or None})]
        if new_session:
            steps.append(("session", wk.job_new_session, {"cine": self.cine, "structures": structures}))
            restored = filter_prompts(saved["prompts"], structures)
            if restored and info.prompted:
                steps.append(("restore", job_restore_prompts, {"prompts": restored}))
        changed: list = []
        if from_edit:
            seg_seq = mrml.find_segmentation_sequence(browser)
            if seg_seq is None:
                raise EchoSAMError("There is no EchoSAM segmentation yet: press Segment first.")
            if not info.prompted:
                raise PromptError(f"{info.title} is prompt-free: it cannot take corrections. Choose a MemSAM model "
                                  "to correct and re-propagate.")
            masks = {s: mrml.read_segment_mask(browser, seg_seq, frame, s, self.cine) for s in structures}
            changed = changed_structures(masks, saved["written"], frame)
            if changed:
                steps.append(("corrections", job_corrections, {"frame": int(frame),
                                                               "masks": {s: masks[s] for s in changed}}))
        elif info.prompted:
            pkey = prompt_structure_key(prompt_structure, structures)
            prompts = mrml.prompts_from_markups(include, roi, self.cine, frame, exclude=exclude)
            steps.append(("prompts", job_markup_prompts, {"frame": int(frame), "structure": pkey, "prompts": prompts}))
        if info.prompted:
            steps += [("encode", wk.job_encode, {}), ("propagate", wk.job_propagate, {})]
        else:
            steps.append(("segment_auto", wk.job_segment_auto, {}))
        steps.append(("result", wk.job_result, {}))
        self.session_key = key
        return self._submit(Run("segment", data={"input": input_node, "changed": changed}), steps)

    def submit_lock(self, input_node, frame: int, structures: list) -> Run:
        """Toggle the lock of ``frame``: unlock it if locked for any selected structure, else lock each
        selected structure's current (non-empty) mask as a correction."""
        from . import mrml
        browser = self._browser(input_node)
        seg_seq = mrml.find_segmentation_sequence(browser)
        if seg_seq is None or self.session_key is None:
            raise EchoSAMError("There is no EchoSAM result in this session yet: press Segment first.")
        state = mrml.load_session_state(browser.GetMasterSequenceNode())
        plan = lock_plan(state["locked"], frame, structures)
        masks = None
        if plan == "lock":
            masks = {s: m for s in structures
                     if (m := mrml.read_segment_mask(browser, seg_seq, frame, s, self.cine)).any()}
            if not masks:
                raise PromptError(f"Frame {frame} has no mask of the selected structures to lock.")
        return self._submit(Run("lock", final="lock", data={"input": input_node, "plan": plan, "frame": frame}),
                            [("lock", job_lock, {"frame": int(frame), "masks": masks, "structures": structures})])

    def submit_undo(self, input_node) -> Run:
        self._browser(input_node)
        if self.session_key is None:
            raise EchoSAMError("Nothing to undo in this session.")
        return self._submit(Run("undo", final="undo", data={"input": input_node}), [("undo", wk.job_undo, {})])

    def submit_download(self, name) -> Run:
        """Download a Models.json entry (name or `ModelEntry`) on the worker; Cancel keeps nothing."""
        return self._submit(Run("download", final="download", data={"name": name}),
                            [("download", wk.job_download, {"model": name})])

    def submit_use_file(self, path: str, name) -> Run:
        return self._submit(Run("use_file", final="use_file", data={"name": name}),
                            [("use_file", wk.job_use_file, {"path": str(path), "model": name})])

    # ---- results (main thread) ----
    def poll(self) -> list:
        """Worker messages -> `Action` s; results of segment/undo/lock runs are applied to MRML here.
        An error drops the run's queued jobs; a failed or cancelled model/session step forgets the
        session so the next run rebuilds it."""
        actions = []
        for msg in (self._worker.poll() if self._worker is not None else []):
            a = self.tracker.handle(msg)
            if a.kind in ("error", "cancelled") and a.run is not None:
                if a.kind == "error":
                    self._worker.cancel()
                if a.run.kind == "segment" and "session" not in a.run.done_roles and a.role in ("load", "session"):
                    self.session_key = None
            if a.kind == "result":
                a = self._finish(a)
            if a.kind != "ignore":
                actions.append(a)
        return actions

    def _finish(self, a: Action) -> Action:
        from . import mrml
        kind, node = a.run.kind, a.run.data.get("input")
        try:
            if kind == "segment" or (kind == "undo" and a.value is not None):
                a.value = self.apply(a.value, node)
                changed = a.run.data.get("changed")
                a.text = ("Undone." if kind == "undo" else
                          f"Done: corrected {', '.join(get_structure(s).name for s in changed)} and re-propagated."
                          if changed else "Done.")
            elif kind == "undo":
                a.text = "Nothing to undo."
            elif kind == "lock":
                mrml.update_session_state(self._browser(node).GetMasterSequenceNode(), locked=a.value)
                frame = a.run.data["frame"]
                a.text = (f"Frame {frame} locked: its masks are kept as they are." if a.run.data["plan"] == "lock"
                          else f"Frame {frame} unlocked: press Propagate from current frame to recompute it.")
            elif kind in ("download", "use_file"):
                a.text = f"Weights ready: {a.value}"
        except EchoSAMError as exc:
            return Action("error", a.run, a.role, str(exc))
        return a

    def apply(self, result: wk.SegmentationResult, input_node) -> dict:
        """Labels -> segmentation sequence (undoable), session state, LV curve; the cardiac summary."""
        from . import cardiac, mrml
        browser = self._browser(input_node)
        scene, seq = browser.GetScene(), browser.GetMasterSequenceNode()
        if self.cine is None:
            self.cine = mrml.cine_from_sequence(browser)
        scene.SaveStateForUndo()
        mrml.write_segmentation_sequence(result.labels, self.cine, browser, result.structures)
        analysis = cardiac.analyse(result.labels, spacing=self.cine.spacing, times_s=self.cine.frame_times)
        summary = analysis.summary()
        mrml.save_session_state(seq, result.locked, summary["ed_frames"], summary["es_frames"], result.prompts,
                                written=label_digests(result.labels, result.structures))
        nodes = mrml.write_lv_curve(scene, analysis.times_s, analysis.volume_al_ml, quantity="LV volume", unit="ml",
                                    ed_frames=summary["ed_frames"], es_frames=summary["es_frames"],
                                    ef=analysis.ef_percent, anchor=seq)
        summary["chart"] = nodes["chart"]
        return summary

    def phase_frames(self, input_node, phase: str) -> list:
        state = self.state_of(input_node)
        return state["ed_frames"] if phase == "ed" else state["es_frames"]

    def curve_chart(self, input_node):
        from . import mrml
        browser = self.browser_of(input_node)
        return browser.GetMasterSequenceNode().GetNodeReference(mrml.REF_CURVE_CHART) if browser else None
