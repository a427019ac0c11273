"""What the Slicer module decides and does, without Qt: tested headless on real MRML nodes.

The module file (``EchoSAMSlicer.py``) is thin glue: it reads widgets, calls the `Controller`
here, and shows the `Action` each worker message turns into. This module holds:

- `RunTracker`: the jobs of one user action (a *run*) and what each worker message means for it;
- `Controller`: submits runs to the `echosam.worker.Worker` and applies results to MRML on the
  caller's (main) thread when `Controller.poll` is called from a timer.

The pure panel decisions (model chooser facts, prompt merging per (frame, structure), digests of
what EchoSAM wrote to tell user edits apart, results rows, button states) live in
`echosam.slicer_panel`, the panel's worker jobs in `echosam.slicer_jobs`; both are re-exported
here, so ``from echosam.slicer_logic import ...`` keeps working for every public name.

Only ``echosam.mrml`` touches Slicer classes; nothing here imports Qt, ``slicer`` or torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from . import worker as wk
from .errors import EchoSAMError, PromptError
from .slicer_jobs import job_corrections, job_lock, job_markup_prompts, job_restore_prompts
from .slicer_panel import (FILE_FAMILIES, OFFICIAL_SUFFIXES, OWN_SUFFIXES, ModelInfo,  # noqa: F401 (re-exported)
                           UseFilePlan, button_states, changed_structures, ef_text, filter_prompts, is_file_spec,
                           label_digests, lock_plan, markup_prompt_plan, mask_digest, model_info, plan_use_file,
                           prompt_structure_key, results_rows, structures_from_flags)
from .structures import get_structure


# ---- runs: the jobs of one user action and what their messages mean -------------------------------
STEP_NAMES = {"load": "Loading model", "session": "Preparing the cine", "restore": "Restoring prompts",
              "prompts": "Applying prompts", "corrections": "Applying corrections", "encode": "Encoding frames",
              "propagate": "Propagating", "segment_auto": "Segmenting", "segment": "Segmenting", "result": "Collecting the result",
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
    if msg.total > 1 or role in ("encode", "propagate", "segment_auto", "segment"):
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
        steps += [("encode", wk.job_encode, {}), ("segment", wk.job_segment, {}), ("result", wk.job_result, {})]
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
