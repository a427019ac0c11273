"""The Qt-free controller the Slicer panel drives: submits runs to the worker and applies their
results to MRML on the caller's (main) thread when `Controller.tick` is called from a timer.

One source for each piece of state:
- the prompts, corrections and locks of a cine: the ``EchoSAM.Prompts`` attribute of its input
  sequence (`echosam.slicer.prompts`); the worker's `Session` is rebuilt from it on every run;
- what EchoSAM last wrote: ``EchoSAM.WrittenMasks`` fingerprints (`echosam.slicer.edits`); every
  frame that differs from them is a user edit, taken as a locked correction and never overwritten;
- undo: ``EchoSAM.UndoStack`` (`echosam.slicer.undo`); the calibration: ``EchoSAM.PixelSpacing``
  (`echosam.slicer.calibration`), read with the result's analysis in `echosam.slicer.scene_result`;
- the session and model: the worker's ``state`` (``state["session_key"]``); the controller keeps
  no copy. A run's inputs (cine, prompts) are computed into locals, validated, and only then
  attached to the run that uses them.

Methods take MRML nodes as arguments and raise `EchoSAMError` for user mistakes; only
``echosam.mrml`` touches Slicer classes; nothing here imports Qt, ``slicer`` or torch.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import mrml
from .. import worker as wk
from ..compute import check_precision
from ..ef_check import EFCheck, check_summary
from ..errors import CineError, EchoSAMError, PromptError
from ..orientation import parse_orientation
from ..structures import get_structure
from . import calibration, display, prompts as pr, scene_result, undo
from .chooser import model_info
from .edits import find_edits, label_digests, lock_plan, masks_of_labels
from .jobs import job_ef_check, job_sync_session
from .runs import Action, Run, RunTracker
from .scene_result import ALL_STRUCTURES


class Controller:
    """See the module docstring. ``worker_factory`` builds the worker (tests may pass their own)."""

    def __init__(self, worker_factory=wk.Worker) -> None:
        self._worker: Optional[wk.Worker] = None
        self._worker_factory = worker_factory
        self.tracker = RunTracker()
        self._watcher: Optional[mrml.PlacementWatcher] = None

    # ---- worker ----
    @property
    def worker(self) -> wk.Worker:
        if self._worker is None:
            self._worker = self._worker_factory()
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
        if self._watcher is not None:
            self._watcher.close()

    def _submit(self, run: Run, steps: list) -> Run:
        for role, fn, kwargs in steps:
            run.roles[self.worker.submit(role, fn, **kwargs)] = role
        return self.tracker.add(run)

    # ---- inputs ----
    @staticmethod
    def browser_of(node):
        try:
            return mrml.resolve_input(node)[0] if node is not None else None
        except CineError:
            return None

    def _browser(self, node):
        browser = self.browser_of(node)
        if browser is None:
            raise EchoSAMError("EchoSAM writes its result as a segmentation sequence: select a sequence browser "
                               "(load the cine as a sequence, e.g. DICOM ultrasound multi-frame or .seq.nrrd).")
        return browser

    def watch_markups(self, input_node, nodes) -> None:
        """Stamp points placed from now on in ``nodes`` with the frame shown when they are placed."""
        browser = self.browser_of(input_node)
        if self._watcher is None or self._watcher.browser is not browser:
            if self._watcher is not None:
                self._watcher.close()
            self._watcher = mrml.PlacementWatcher(browser)
        self._watcher.watch(nodes)

    def _prompts(self, seq, cine) -> dict:
        return pr.usable_prompts(mrml.load_session_state(seq)["prompts"], cine.n_frames, cine.shape[1:])

    def scene_masks(self, browser, cine, structures) -> dict:
        """``{frame: {structure: mask}}`` of every frame of the segmentation sequence, as the user left it."""
        seg_seq = mrml.find_segmentation_sequence(browser)
        if seg_seq is None:
            return {}
        return masks_of_labels(mrml.read_labels(browser, seg_seq, structures, cine), structures)

    def edited_frames(self, input_node, structures=ALL_STRUCTURES) -> dict:
        """``{frame: [structures]}`` the user changed since EchoSAM last wrote them (any frame)."""
        browser = self._browser(input_node)
        seq = browser.GetMasterSequenceNode()
        if mrml.find_segmentation_sequence(browser) is None:
            return {}
        cine = mrml.cine_from_sequence(browser)
        edits = find_edits(self.scene_masks(browser, cine, structures), mrml.load_session_state(seq)["written"])
        return {t: sorted(m) for t, m in edits.items()}

    # ---- segment / propagate ----
    def submit_segmentation(self, input_node, spec: str, device: str, structures: list, frame: int = 0,
                            prompt_structure: str = "lv", include=None, exclude=None, roi=None,
                            family: str = "", from_edit: bool = False, precision: str = "auto",
                            ef_check: bool = False, orientation: str = "standard") -> Run:
        """Segment or re-propagate the loop of ``input_node``.

        Every frame the user changed since the last write becomes a locked correction (whichever
        frame is shown). Without ``from_edit`` the markups are prompts too, each point on the frame it
        was placed on (``frame``: the frame for points placed before they were watched). ``precision``:
        "auto" (the fast path `echosam.compute.choose_path` picks) or "fp32" (the panel's Force fp32).
        ``ef_check``: for boxes alone (no correction), the result, then two more readings with the boxes a little
        larger and smaller: the EF checked against them, and the middle reading kept as the result (`ef_check`).
        ``orientation``: "standard" | "mirrored" | "auto", how the apical view is displayed (`echosam.orientation`).
        Everything is validated here, before any job is queued: nothing changes on error."""
        browser = self._browser(input_node)
        seq = browser.GetMasterSequenceNode()
        keys = [get_structure(s).key for s in structures]
        if not keys:
            raise PromptError("Select at least one structure (LV, myocardium or LA).")
        orientation = parse_orientation(orientation)
        info = model_info(spec, family)
        cine = mrml.cine_from_sequence(browser)
        prompts = self._prompts(seq, cine)
        seg_seq = mrml.find_segmentation_sequence(browser)
        if from_edit and seg_seq is None:
            raise EchoSAMError("There is no EchoSAM segmentation yet: press Segment first.")
        edits = find_edits(self.scene_masks(browser, cine, keys), mrml.load_session_state(seq)["written"]) \
            if seg_seq is not None else {}
        if not from_edit and not edits:     # a new Segment reads the boxes as drawn; a correction keeps the reading
            prompts = pr.as_drawn(prompts)
        if info.prompted:
            prompts = pr.add_corrections(prompts, edits)
            if not from_edit:
                pkey = pr.prompt_structure_key(prompt_structure, keys)
                placed = mrml.markup_prompts_by_frame(include, roi, cine, frame, exclude=exclude)
                for f, items in sorted(placed.items()):
                    prompts = pr.merge_markup_prompts(prompts, f, pkey, items) or prompts
            if not pr.has_prompts(prompts, keys):
                raise PromptError("There is no prompt yet: place an include point (or an ROI) on the structure, "
                                  "then press Segment.")
        elif from_edit:
            raise PromptError(f"{info.title} is prompt-free: it cannot take corrections. Choose a MemSAM model "
                              "to correct and re-propagate.")
        key = (seq.GetID(), cine.n_frames, tuple(cine.shape[1:]), str(spec), device, family or "", tuple(keys),
               check_precision(precision), orientation)
        # one dict for both jobs: they only read it (their cropped or scaled prompts are copies)
        session_prompts = pr.session_prompts(prompts, keys) if info.prompted else None
        steps = [("load", wk.job_load_model, {"spec": str(spec), "device": device, "family": family or None}),
                 ("session", job_sync_session, {"key": key, "cine": cine, "structures": keys, "precision": precision,
                                                "prompts": session_prompts, "orientation": orientation})]
        steps += [("encode", wk.job_encode, {}), ("segment", wk.job_segment, {}), ("result", wk.job_result, {})]
        check = ef_check and info.prompted and not from_edit and not edits and pr.ef_checkable(prompts, keys)
        if check:      # the spacing of the cine read above, not read again from the scene
            kw = dict(key=key, cine=cine, structures=keys, precision=precision, prompts=session_prompts)
            steps.append(("ef_check", job_ef_check, dict(kw, spacing_mm=scene_result.spacing(seq, cine).spacing_mm)))
        data = {"input": input_node, "browser": browser, "cine": cine, "prompts": prompts if info.prompted else None,
                "corrected": sorted(edits), "what": "Propagate" if from_edit else "Segment"}
        return self._submit(Run("segment", data=data, final="ef_check" if check else "result",
                                early=("result",) if check else ()), steps)

    def submit_download(self, name) -> Run:
        """Download a Models.json entry (name or `ModelEntry`) on the worker; Cancel keeps nothing."""
        return self._submit(Run("download", final="download", data={"name": name}),
                            [("download", wk.job_download, {"model": name})])

    def submit_use_file(self, path: str, name) -> Run:
        return self._submit(Run("use_file", final="use_file", data={"name": name}),
                            [("use_file", wk.job_use_file, {"path": str(path), "model": name})])

    # ---- results (main thread) ----
    def poll(self) -> list:
        """Worker messages -> `Action` s; segmentation results are written to MRML here. An error drops
        the run's queued jobs; the worker forgets a session whose model or cine step failed."""
        actions = []
        for msg in (self._worker.poll() if self._worker is not None else []):
            a = self.tracker.handle(msg)
            if a.kind == "result":
                a = self._finish(a)
            if a.kind == "error" and a.run is not None:      # incl. a result that could not be applied
                a.run.finished = True
                self._worker.cancel()
            if a.kind != "ignore":
                actions.append(a)
        return actions

    def tick(self) -> tuple:
        """One timer tick: ``(actions, keep_polling)``. The panel stops its timer when keep_polling is
        False; the worker's ``busy`` stays True until every final message has been polled."""
        actions = self.poll()
        return actions, self.busy

    def _finish(self, a: Action) -> Action:
        try:
            if a.run.kind == "segment" and a.role == "ef_check":
                a.value = self._middle_reading(a.run.data, a.value)
                a.text = display.done_text(a.run.data, a.value)
            elif a.run.kind == "segment":
                a.value = a.run.data["summary"] = self.apply(a.value, a.run.data)
                a.text = display.done_text(a.run.data, a.value, checking=not a.run.finished)
            else:
                a.text = f"Weights ready: {a.value}"
        except EchoSAMError as exc:
            return Action("error", a.run, a.role, str(exc))
        return a

    def _middle_reading(self, data: dict, readings: dict) -> dict:
        """The EF check's readings (`jobs.job_ef_check`) -> the summary shown: the middle reading written as the
        result when it is a changed box (an undo step of its own; the prompts record the reading, so that a
        correction propagates from it), with the check of the three."""
        check = EFCheck.of_readings(readings["runs"])
        if readings["result"] is not None:
            prompts = dict(data["prompts"], **{pr.READING: check.reported_change})
            data["summary"] = self.apply(readings["result"], dict(data, prompts=prompts, what="Middle reading"))
        return check_summary(data["summary"], check)

    def _publish(self, browser, cine, labels, structures, frames, prompts, written, step) -> tuple:
        """Write ``frames`` of ``labels``, the state and the LV curve; returns (analysis, summary)."""
        scene, seq = browser.GetScene(), browser.GetMasterSequenceNode()
        if frames or mrml.find_segmentation_sequence(browser) is None:
            mrml.write_segmentation_sequence(labels, cine, browser, structures, frames=frames)
        mrml.set_reference_volume(browser)
        analysis, summary = scene_result.analyse(seq, labels, cine)
        locked = pr.locked_frames(prompts, ALL_STRUCTURES) if prompts else {}
        mrml.save_session_state(seq, locked, summary["ed_frames"], summary["es_frames"], prompts or {}, written=written)
        if step is not None:
            stack = mrml.get_json_attribute(seq, undo.ATTRIBUTE, [])
            mrml.set_json_attribute(seq, undo.ATTRIBUTE, undo.push(stack, step))
        scene_result.write_curve(scene, seq, analysis, summary)
        return analysis, summary

    def apply(self, result: wk.SegmentationResult, data: dict) -> dict:
        """A finished run -> the segmentation sequence, state, undo step and LV curve; the summary.

        A frame the user changed after the run started (its scene mask differs from the fingerprint
        and from what the run computed) is not written: the edit stays, to be propagated next."""
        browser, cine = data["browser"], data["cine"]
        seq = browser.GetMasterSequenceNode()
        structures = list(result.structures)
        state = mrml.load_session_state(seq)
        has_seq = mrml.find_segmentation_sequence(browser) is not None
        before = (mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), structures, cine) if has_seq
                  else np.zeros_like(result.labels))
        edits = find_edits(masks_of_labels(before, structures), state["written"]) if has_seq else {}
        kept = sorted(t for t, masks in edits.items()
                      if any(not np.array_equal(m, result.labels[t] == get_structure(s).label)
                             for s, m in masks.items()))
        labels = result.labels.copy()
        labels[kept] = before[kept]
        frames = None if not has_seq else [int(t) for t in np.flatnonzero(
            (labels != before).reshape(labels.shape[0], -1).any(axis=1))]
        written = dict(state["written"])
        written.update(label_digests(labels, structures, [t for t in range(labels.shape[0]) if t not in kept]))
        prompts = data.get("prompts")
        if prompts is None:                      # prompt-free: keep the stored prompts as they are
            prompts = state["prompts"] or None
        step = undo.make_step(data.get("what", "Segment"), state["prompts"], state["written"], before, labels,
                              structures)
        _, summary = self._publish(browser, cine, labels, structures, frames, prompts, written, step)
        summary.update(kept_edits=kept, compute_path=result.compute_path)
        summary.update(ef_accuracy=result.ef_accuracy, notices=list(result.notices))
        return summary

    # ---- lock, undo, edit, calibrate (main thread, no model needed; work after a scene reload) ----
    def toggle_lock(self, input_node, frame: int, structures: list) -> str:
        """Unlock ``frame`` if it is locked for any selected structure, else lock each selected
        structure's current (non-empty) mask there as a correction. Returns the panel's message."""
        browser = self._browser(input_node)
        seq, seg_seq = browser.GetMasterSequenceNode(), mrml.find_segmentation_sequence(browser)
        if seg_seq is None:
            raise EchoSAMError("There is no EchoSAM result yet: press Segment first.")
        cine = mrml.cine_from_sequence(browser)
        state = mrml.load_session_state(seq)
        prompts = self._prompts(seq, cine)
        keys = [get_structure(s).key for s in structures]
        if lock_plan(pr.locked_frames(prompts, ALL_STRUCTURES), frame, keys) == "unlock":
            new = pr.remove_locks(prompts, frame, keys)
            text = f"Frame {frame} unlocked: press Propagate to recompute it."
        else:
            masks = {s: m for s in keys if (m := mrml.read_segment_mask(browser, seg_seq, frame, s, cine)).any()}
            if not masks:
                raise PromptError(f"Frame {frame} has no mask of the selected structures to lock.")
            new, text = pr.add_corrections(prompts, {int(frame): masks}), f"Frame {frame} locked: its masks are kept."
        step = {"what": "Lock", "prompts": state["prompts"],
                "written": {str(k): v for k, v in state["written"].items()}, "frames": {}, "structures": keys}
        mrml.update_session_state(seq, prompts=new, locked=pr.locked_frames(new, ALL_STRUCTURES))
        mrml.set_json_attribute(seq, undo.ATTRIBUTE, undo.push(mrml.get_json_attribute(seq, undo.ATTRIBUTE, []), step))
        return text

    def can_undo(self, input_node) -> bool:
        browser = self.browser_of(input_node)
        return browser is not None and bool(mrml.get_json_attribute(browser.GetMasterSequenceNode(),
                                                                     undo.ATTRIBUTE, []))

    def undo(self, input_node) -> dict:
        """Undo the last EchoSAM write (Segment, Propagate, Lock): the scene returns exactly to how it was
        before it, user edits included. Refused when it would overwrite an edit not yet propagated."""
        browser = self._browser(input_node)
        seq = browser.GetMasterSequenceNode()
        stack = mrml.get_json_attribute(seq, undo.ATTRIBUTE, [])
        if not stack:
            raise EchoSAMError("Nothing to undo.")
        step = stack[-1]
        cine = mrml.cine_from_sequence(browser)
        structures = step["structures"]
        seg_seq = mrml.find_segmentation_sequence(browser)
        current = (mrml.read_labels(browser, seg_seq, structures, cine) if seg_seq is not None
                   else np.zeros(cine.frames.shape[:3], np.uint8))
        state = mrml.load_session_state(seq)
        edited = find_edits(masks_of_labels(current, structures), state["written"]) if seg_seq is not None else {}
        clash = sorted(set(edited) & {int(t) for t in step["frames"]})
        if clash:
            raise EchoSAMError(f"Frames {', '.join(map(str, clash))} hold edits not yet propagated; Undo would "
                               "overwrite them. Press Propagate first, or undo them in Segment Editor.")
        labels, frames = undo.restore_labels(step, current)
        mrml.set_json_attribute(seq, undo.ATTRIBUTE, stack[:-1])
        written = {int(k): v for k, v in step["written"].items()}
        _, summary = self._publish(browser, cine, labels, structures, frames, step["prompts"], written, None)
        summary["undone"] = step["what"]
        return summary

    def edit_frame(self, input_node, frame: Optional[int] = None, structure: str = "lv") -> dict:
        """Prepare Segment Editor for ``frame`` (current by default): the browser shows it, the proxy
        segmentation's reference geometry is the cine's proxy volume, and a Segment Editor node holds
        the segmentation, source volume and selected segment. Returns those nodes."""
        browser = self._browser(input_node)
        seg_seq = mrml.find_segmentation_sequence(browser)
        if seg_seq is None:
            raise EchoSAMError("There is no EchoSAM result to edit yet: press Segment first.")
        if frame is not None:
            n = browser.GetNumberOfItems()
            if not 0 <= int(frame) < n:
                raise PromptError(f"Frame {frame} is outside 0..{n - 1}.")
            browser.SetSelectedItemNumber(int(frame))
        nodes = mrml.segment_editor_setup(browser, get_structure(structure).segment_id)
        nodes["frame"] = browser.GetSelectedItemNumber()
        return nodes

    def calibrate(self, input_node, spacing: Optional[tuple] = None, line=None, known_mm: float = 0.0) -> dict:
        """Store a calibration (typed ``spacing`` (row, col) mm, or a line markup over ``known_mm``) on the
        input sequence; the LV curve and volumes are recomputed when there is a result. The summary."""
        browser = self._browser(input_node)
        seq = browser.GetMasterSequenceNode()
        cine = mrml.cine_from_sequence(browser)
        if spacing is not None:
            stored = calibration.typed_spacing(*spacing)
        elif line is not None and line.GetNumberOfControlPoints() >= 2:
            p0, p1 = [0.0] * 3, [0.0] * 3
            line.GetNthControlPointPositionWorld(0, p0)
            line.GetNthControlPointPositionWorld(1, p1)
            stored = calibration.spacing_from_line(p0, p1, cine.ijk_to_ras, known_mm)
        else:
            raise EchoSAMError("Type the pixel spacing, or draw a line (two points) over a known distance.")
        mrml.set_json_attribute(seq, calibration.ATTRIBUTE, stored)
        return scene_result.summary(browser, cine)      # the cine read above: a calibration leaves it as it is

    # ---- the result in the scene (`echosam.slicer.scene_result`; the input node resolved here) ----
    def has_result(self, node) -> bool:
        return scene_result.has_result(self.browser_of(node))

    def state_of(self, node) -> dict:
        return mrml.load_session_state(self._browser(node).GetMasterSequenceNode())

    def spacing_of(self, input_node) -> calibration.Spacing:
        browser = self._browser(input_node)
        return scene_result.spacing(browser.GetMasterSequenceNode(), mrml.cine_from_sequence(browser))

    def summary(self, input_node) -> dict:
        """The cardiac summary of the result as it is in the scene (after a reload or a calibration)."""
        browser = self._browser(input_node)
        return scene_result.summary(browser, mrml.cine_from_sequence(browser))

    def frames_info(self, input_node) -> dict:
        """What the panel's frame line shows: current frame, count, prompt frames, locked frames."""
        return scene_result.frames_info(self.browser_of(input_node))

    def phase_frames(self, input_node, phase: str) -> list:
        return scene_result.phase_frames(self._browser(input_node), phase)

    def curve_chart(self, input_node):
        return scene_result.curve_chart(self.browser_of(input_node))
