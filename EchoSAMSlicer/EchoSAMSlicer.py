"""EchoSAMSlicer: segment echocardiography cine loops with SAM-based video models.

Thin Slicer glue. The engine is the plain-Python package ``echosam`` in ``Logic/`` (MRML bridge in
``echosam.mrml``, model and session on a background worker in ``echosam.worker``). Nothing is
installed at import time or in constructors; torch is imported only after the install step.
"""
import os
import sys

import ctk
import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

LOGIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Logic")
if LOGIC_DIR not in sys.path:
    sys.path.insert(0, LOGIC_DIR)

REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "requirements.txt")
DEVICES = ["auto", "cpu", "cuda"]


class EchoSAMSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("EchoSAM")
        self.parent.categories = ["Ultrasound"]
        self.parent.dependencies = ["Sequences", "Segmentations", "Markups"]
        self.parent.contributors = ["EchoSAMSlicer developers"]
        self.parent.helpText = _(
            "Segment the left ventricle, myocardium and left atrium in 2D echocardiography cine loops "
            "(sequence browsers, incl. DICOM ultrasound multi-frame) with SAM-based video models. Place points "
            "or an ROI (or edit a mask) on any frame, press Segment, correct any frame in Segment Editor and "
            "press 'Propagate from current frame'. Corrected frames are locked and never overwritten. "
            "The LV curve, ED/ES frames and EF are computed from the result. Research use only: not a medical device."
            "<br><br>Models: MemSAM (Deng et al., CVPR 2024, github.com/dengxl0520/MemSAM), "
            "MediViSTA (Kim et al., arXiv:2309.13539 / IEEE JBHI 2025, github.com/SekeunKim/MediViSTA), "
            "MA-SAM (Chen et al., Medical Image Analysis 2024, github.com/cchen-cc/MA-SAM), all built on "
            "Segment Anything (Kirillov et al., ICCV 2023, Apache-2.0). Check each upstream repository's license "
            "before using its weights; the bundled demo models are Apache-2.0 and trained on synthetic data only.")
        self.parent.acknowledgementText = _("Built on 3D Slicer, Segment Anything and the MemSAM, MediViSTA and MA-SAM papers.")


@parameterNodeWrapper
class EchoSAMSlicerParameterNode:
    """inputNode: sequence browser (or a single volume). modelName: Models.json name. device: auto/cpu/cuda."""

    inputNode: slicer.vtkMRMLNode
    modelName: str = "echosam-demo-memsam-tiny"
    device: str = "auto"
    segmentLV: bool = True
    segmentMYO: bool = False
    segmentLA: bool = False
    includePoints: slicer.vtkMRMLMarkupsFiducialNode
    excludePoints: slicer.vtkMRMLMarkupsFiducialNode
    roi: slicer.vtkMRMLMarkupsROINode


class EchoSAMSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = None
        self._jobs = {}

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/EchoSAMSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = EchoSAMSlicerLogic()

        for entry in self.logic.modelEntries():
            self.ui.modelSelector.addItem(entry.title, entry.name)
        for device in DEVICES:
            self.ui.deviceSelector.addItem(device)
        self.ui.includePlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.excludePlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.roiPlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.progressBar.setVisible(False)
        self.ui.cpuWarningLabel.setVisible(False)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelSelector.currentIndexChanged.connect(self.updateModelInfo)
        self.ui.deviceSelector.currentIndexChanged.connect(self.updateDeviceWarning)
        self.ui.includePointsSelector.currentNodeChanged.connect(self.ui.includePlaceWidget.setCurrentNode)
        self.ui.excludePointsSelector.currentNodeChanged.connect(self.ui.excludePlaceWidget.setCurrentNode)
        self.ui.roiSelector.currentNodeChanged.connect(self.ui.roiPlaceWidget.setCurrentNode)
        self.ui.segmentButton.clicked.connect(lambda: self.run(propagateOnly=False))
        self.ui.propagateButton.clicked.connect(lambda: self.run(propagateOnly=True))
        self.ui.lockButton.clicked.connect(self.onLockToggle)
        self.ui.undoButton.clicked.connect(self.onUndo)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.jumpEDButton.clicked.connect(lambda: self.jumpTo("ed"))
        self.ui.jumpESButton.clicked.connect(lambda: self.jumpTo("es"))
        self.ui.showCurveButton.clicked.connect(self.onShowCurve)

        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.timeout.connect(self.pollWorker)
        self.initializeParameterNode()
        self.updateModelInfo()
        self.updateButtons()

    def cleanup(self):
        self.removeObservers()
        if self._timer:
            self._timer.stop()
        if self.logic:
            self.logic.shutdown()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputNode:
            browser = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode")
            if browser:
                self._parameterNode.inputNode = browser

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            index = self.ui.modelSelector.findData(self._parameterNode.modelName)
            self.ui.modelSelector.setCurrentIndex(max(index, 0))
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    # ---- display helpers ------------------------------------------------------------------------
    def updateModelInfo(self, *args):
        name = self.ui.modelSelector.currentData
        entry = self.logic.modelEntry(name) if name else None
        if entry and self._parameterNode:
            self._parameterNode.modelName = entry.name
        self.ui.modelInfoLabel.text = entry.summary() if entry else ""
        self.ui.modelInfoLabel.toolTip = entry.description if entry else ""
        if entry:
            self.ui.promptsCollapsibleButton.collapsed = not entry.prompted

    def updateDeviceWarning(self, *args):
        self.ui.cpuWarningLabel.setVisible(self.ui.deviceSelector.currentText == "cpu")

    def updateButtons(self, *args):
        p = self._parameterNode
        ready = bool(p and p.inputNode and (p.segmentLV or p.segmentMYO or p.segmentLA))
        busy = self.logic is not None and self.logic.busy
        for button in (self.ui.segmentButton, self.ui.propagateButton, self.ui.lockButton, self.ui.undoButton):
            button.enabled = ready and not busy
        self.ui.cancelButton.enabled = busy
        self.ui.segmentButton.toolTip = _("Segment the whole loop") if ready else _("Select an input cine first")

    def currentBrowser(self):
        node = self._parameterNode.inputNode if self._parameterNode else None
        return self.logic.browserOf(node) if node else None

    def currentFrame(self):
        browser = self.currentBrowser()
        return browser.GetSelectedItemNumber() if browser else 0

    # ---- actions --------------------------------------------------------------------------------
    def run(self, propagateOnly):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            if not self.logic.ensureDependencies(askConfirmation=True):
                return
            device = self.logic.resolveDevice(p.device)
            self.ui.cpuWarningLabel.setVisible(device == "cpu")
            structures = self.logic.structuresFromFlags(p.segmentLV, p.segmentMYO, p.segmentLA)
            jobId = self.logic.submitSegmentation(
                p.inputNode, p.modelName, device, structures, frame=self.currentFrame(),
                includePoints=p.includePoints, excludePoints=p.excludePoints, roi=p.roi,
                correctionFromSegmentation=propagateOnly)
            self._jobs[jobId] = "labels"
            self.ui.progressBar.setVisible(True)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Working...")
            self._timer.start()
            self.updateButtons()

    def pollWorker(self):
        for msg in self.logic.poll():
            if msg.kind == "progress":
                self.ui.progressBar.maximum = max(msg.total, 1)
                self.ui.progressBar.value = msg.done
                self.ui.progressBar.format = f"{msg.done}/{msg.total} frames"
                self.ui.statusLabel.text = msg.text
            elif msg.kind == "error":
                self.finishJob(msg.job_id, _("Failed."))
                slicer.util.errorDisplay(msg.text, detailedText=msg.details)
            elif msg.kind == "cancelled":
                self.finishJob(msg.job_id, msg.text)
            elif msg.kind == "result" and self._jobs.get(msg.job_id) == "labels":
                with slicer.util.tryWithErrorDisplay(_("Could not write the result into the scene."), waitCursor=True):
                    summary = self.logic.applyResult(msg.value, self._parameterNode.inputNode)
                    self.showResults(summary)
                self.finishJob(msg.job_id, _("Done."))
        if not self.logic.busy and not self._jobs:
            self._timer.stop()
            self.ui.progressBar.setVisible(False)
        self.updateButtons()

    def finishJob(self, jobId, text):
        self._jobs.pop(jobId, None)
        self.ui.statusLabel.text = text

    def showResults(self, summary):
        self.ui.edFrameLabel.text = ", ".join(map(str, summary["ed_frames"])) or "-"
        self.ui.esFrameLabel.text = ", ".join(map(str, summary["es_frames"])) or "-"
        ef = summary.get("ef_percent")
        self.ui.efLabel.text = "-" if ef is None or ef != ef else f"{ef:.1f} %"
        self.ui.efLabel.toolTip = summary.get("message", "")

    def onLockToggle(self):
        with slicer.util.tryWithErrorDisplay(_("Could not lock the frame."), waitCursor=True):
            p = self._parameterNode
            structures = self.logic.structuresFromFlags(p.segmentLV, p.segmentMYO, p.segmentLA)
            locked = self.logic.toggleLock(p.inputNode, self.currentFrame(), structures)
            self.ui.statusLabel.text = _("Frame {frame} locked.").format(frame=self.currentFrame()) if locked \
                else _("Frame {frame} unlocked.").format(frame=self.currentFrame())

    def onUndo(self):
        with slicer.util.tryWithErrorDisplay(_("Nothing to undo."), waitCursor=True):
            self.ui.statusLabel.text = _("Undone.") if self.logic.undo() else _("Nothing to undo.")

    def onCancel(self):
        if self.logic:
            self.logic.cancel()

    def jumpTo(self, phase):
        browser = self.currentBrowser()
        frames = self.logic.phaseFrames(browser, phase) if browser else []
        if frames:
            browser.SetSelectedItemNumber(frames[0])

    def onShowCurve(self):
        chart = self.logic.curveChart(self.currentBrowser())
        if chart is None:
            return
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalPlotView)
        slicer.app.applicationLogic().GetSelectionNode().SetActivePlotChartID(chart.GetID())
        slicer.app.applicationLogic().PropagatePlotChartSelection()


class EchoSAMSlicerLogic(ScriptedLoadableModuleLogic):
    """Adapter between the Widget and ``echosam``. Takes nodes as arguments; never touches widgets."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._worker = None
        self._cine = None
        self._cineKey = None

    def getParameterNode(self):
        return EchoSAMSlicerParameterNode(super().getParameterNode())

    # ---- models and inputs (no torch) ---------------------------------------------------------------
    def modelEntries(self):
        from echosam import model_zoo
        return model_zoo.load_registry()

    def modelEntry(self, name):
        from echosam import model_zoo
        return model_zoo.get_entry(name)

    def browserOf(self, node):
        """The sequence browser playing ``node`` (browser, sequence or proxy), or None for a lone volume."""
        from echosam import mrml
        from echosam.errors import CineError
        try:
            return mrml.resolve_input(node)[0]
        except CineError:
            return None

    def cineFromInput(self, node):
        """Browser / sequence / proxy -> cine of the sequence; a lone volume -> one-frame cine."""
        from echosam import mrml
        if self.browserOf(node) is not None:
            return mrml.cine_from_sequence(node)
        return mrml.cine_from_volume(node)

    @staticmethod
    def structuresFromFlags(lv, myo, la):
        keys = [k for k, on in (("lv", lv), ("myo", myo), ("la", la)) if on]
        if not keys:
            raise ValueError(_("Select at least one structure (LV, myocardium or LA)."))
        return keys

    def promptsFromMarkups(self, cine, frame, includePoints=None, excludePoints=None, roi=None):
        from echosam import mrml
        return mrml.prompts_from_markups(includePoints, roi, cine, frame, exclude=excludePoints)

    # ---- dependencies (Slicer only; called from the Segment button) -----------------------------
    def missingPackages(self):
        from echosam import install
        return install.missing_requirements(REQUIREMENTS)

    def ensureDependencies(self, askConfirmation=True):
        """torch via PyTorchUtils (no forced CUDA backend), the rest via pip_ensure; True when ready."""
        from echosam import install
        missing = install.missing_requirements(REQUIREMENTS)
        needTorch = not install.has_module("torch")
        if not missing and not needTorch:
            return True
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(install.install_message(missing, needTorch)):
            return False
        if needTorch:
            try:
                import PyTorchUtils
            except ImportError:
                raise ValueError(_("Install the 'PyTorch' extension from the Extensions Manager, restart Slicer, "
                                   "and press Segment again.")) from None
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=">=2.1") is None:
                raise ValueError(_("PyTorch was not installed; see the PyTorch module for details."))
        requirements = install.load_requirements(REQUIREMENTS)
        if hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):
            slicer.packaging.pip_ensure(requirements, skip_packages=list(install.SKIP_PACKAGES), requester="EchoSAM")
        else:  # Slicer < 5.11
            slicer.util.pip_install(install.pip_arguments(missing))
        return True

    def resolveDevice(self, choice):
        import torch  # only after ensureDependencies
        if choice == "cuda" and not torch.cuda.is_available():
            raise ValueError(_("No CUDA GPU is available to PyTorch; choose 'cpu' or 'auto'."))
        if choice == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return choice

    # ---- the worker ------------------------------------------------------------------------------
    @property
    def worker(self):
        if self._worker is None:
            from echosam.worker import Worker
            self._worker = Worker()
        return self._worker

    @property
    def busy(self):
        return self._worker is not None and self._worker.busy

    def poll(self):
        return self._worker.poll() if self._worker else []

    def cancel(self):
        if self._worker:
            self._worker.cancel()

    def shutdown(self):
        if self._worker:
            self._worker.shutdown()
            self._worker = None

    def submitSegmentation(self, inputNode, modelName, device, structures, frame=0, includePoints=None,
                           excludePoints=None, roi=None, correctionFromSegmentation=False):
        """Queue model load, session, prompts/corrections, encode and propagate; returns the job id of the labels."""
        from echosam import mrml, worker
        cine = self.cineFromInput(inputNode)
        key = (inputNode.GetID(), modelName, device, tuple(structures))
        newSession = key != self._cineKey
        self._cine, self._cineKey = cine, key
        browser = self.browserOf(inputNode)
        prompts = self.promptsFromMarkups(cine, frame, includePoints, excludePoints, roi)
        corrections = {}
        segSeq = mrml.find_segmentation_sequence(browser) if browser else None
        if correctionFromSegmentation:
            if segSeq is None:
                raise ValueError(_("There is no EchoSAM segmentation yet: press Segment first."))
            corrections = {s: mrml.read_segment_mask(browser, segSeq, frame, s, cine) for s in structures}
        saved = mrml.load_session_state(browser.GetMasterSequenceNode()) if browser else {"prompts": {}}
        w = self.worker
        w.submit("load model", worker.job_load_model, spec=modelName, device=device)
        if newSession:
            w.submit("session", worker.job_new_session, cine=cine, structures=structures)
            if saved.get("prompts"):
                w.submit("restore prompts", lambda state, p, c, d=saved["prompts"]: state["session"].load_prompts_dict(d))
        w.submit("prompts", _apply_prompts, frame=frame, structure=structures[0], prompts=prompts, corrections=corrections)
        w.submit("encode", worker.job_encode)
        return w.submit("propagate", _segment)

    def applyResult(self, result, inputNode):
        """On the main thread: labels -> segmentation sequence, state, LV curve. Returns the cardiac summary."""
        from echosam import cardiac, mrml
        labels, lockedFrames, promptsDict, structures = result
        browser = self.browserOf(inputNode)
        if browser is None:
            raise ValueError(_("Results of a single volume are written only for sequences; load the cine as a sequence."))
        scene = browser.GetScene()
        scene.SaveStateForUndo()
        mrml.write_segmentation_sequence(labels, self._cine, browser, structures)
        analysis = cardiac.analyse(labels, spacing=self._cine.spacing, times_s=self._cine.frame_times)
        summary = analysis.summary()
        seq = browser.GetMasterSequenceNode()
        mrml.save_session_state(seq, lockedFrames, summary["ed_frames"], summary["es_frames"], promptsDict)
        mrml.write_lv_curve(scene, analysis.times_s, analysis.volume_al_ml, quantity="LV volume", unit="ml",
                            ed_frames=summary["ed_frames"], es_frames=summary["es_frames"],
                            ef=analysis.ef_percent, anchor=seq)
        return summary

    def toggleLock(self, inputNode, frame, structures):
        """Lock the current frame's edited masks as corrections (or unlock it). Returns True when locked."""
        from echosam import mrml
        browser = self.browserOf(inputNode)
        segSeq = mrml.find_segmentation_sequence(browser) if browser else None
        if segSeq is None:
            raise ValueError(_("There is no EchoSAM segmentation yet: press Segment first."))
        state = mrml.load_session_state(browser.GetMasterSequenceNode())
        isLocked = all(frame in state["locked"].get(s, []) for s in structures)
        masks = {} if isLocked else {s: mrml.read_segment_mask(browser, segSeq, frame, s, self._cine) for s in structures}

        def apply(st, progress, cancel):
            session = st.get("session")
            if session is None:
                raise ValueError(_("Press Segment first."))
            for s in structures:
                session.unlock(frame, s) if isLocked else session.set_mask(frame, s, masks[s])
            return session.locked_frames

        self.worker.submit("lock", apply)
        for s in structures:
            frames = set(state["locked"].get(s, []))
            frames = frames - {frame} if isLocked else frames | {frame}
            state["locked"][s] = sorted(frames)
        mrml.save_session_state(browser.GetMasterSequenceNode(), state["locked"], state["ed_frames"],
                                state["es_frames"], state["prompts"])
        return not isLocked

    def undo(self):
        self.worker.submit("undo", lambda st, p, c: st["session"].undo() if "session" in st else False)
        return True

    def phaseFrames(self, browser, phase):
        from echosam import mrml
        state = mrml.load_session_state(browser.GetMasterSequenceNode())
        return state["ed_frames"] if phase == "ed" else state["es_frames"]

    def curveChart(self, browser):
        from echosam import mrml
        return browser.GetMasterSequenceNode().GetNodeReference(mrml.REF_CURVE_CHART) if browser else None


def _apply_prompts(state, progress, cancel, frame, structure, prompts, corrections):
    """Worker job: markups prompts and corrected masks into the session."""
    import numpy as np
    session = state["session"]
    points = [p for p in prompts if p["type"] == "point"]
    if points:
        session.add_points(points[0]["frame"], structure, np.array([p["xy"] for p in points]),
                           np.array([p["label"] for p in points]))
    for p in prompts:
        if p["type"] == "box":
            session.add_box(p["frame"], structure, tuple(p["box"]))
    for s, mask in corrections.items():
        session.set_mask(frame, s, mask)


def _segment(state, progress, cancel):
    """Worker job: propagate (prompted model) or segment the whole loop (prompt-free model)."""
    session = state["session"]
    if state["loaded"].prompted:
        labels = session.propagate(progress=progress, cancel=cancel)
    else:
        labels = session.segment_auto(progress=progress, cancel=cancel)
    structures = [getattr(s, "key", s) for s in getattr(session, "structures", ["lv"])]
    return labels.copy(), session.locked_frames, session.prompts_to_dict(), structures


class EchoSAMSlicerTest(ScriptedLoadableModuleTest):
    """Self-test on a phantom cine with the bundled demo model (runs in Slicer: Reload & Test)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_phantom()

    def test_segment_phantom(self):
        import numpy as np
        from echosam import mrml, phantom

        self.delayDisplay("Building a phantom cine")
        ph = phantom.make_phantom(n_frames=24, size=(96, 96))
        seq = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "Phantom")
        seq.SetIndexName("time")
        seq.SetIndexUnit("s")
        template = slicer.vtkMRMLScalarVolumeNode()
        template.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ph.cine.ijk_to_ras))
        for i, t in enumerate(ph.cine.frame_times):
            slicer.util.updateVolumeFromArray(template, ph.cine.frames[i][None])
            seq.SetDataNodeAtValue(template, f"{t:.4f}")
        browser = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "Phantom browser")
        browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
        ys, xs = np.nonzero(ph.labels[0] == 1)
        points.AddControlPoint(list(ph.cine.pixel_to_ras(float(xs.mean()), float(ys.mean()))))

        logic = EchoSAMSlicerLogic()
        self.assertTrue(logic.ensureDependencies(askConfirmation=False))
        self.delayDisplay("Segmenting with the bundled demo model")
        logic.submitSegmentation(browser, "echosam-demo-memsam-tiny", "cpu", ["lv"], frame=0, includePoints=points)
        self.assertTrue(logic.worker.wait_idle(600))
        results = [m for m in logic.poll() if m.kind in ("result", "error")]
        self.assertEqual(results[-1].kind, "result", getattr(results[-1], "details", ""))
        summary = logic.applyResult(results[-1].value, browser)
        segSeq = mrml.find_segmentation_sequence(browser)
        self.assertIsNotNone(segSeq)
        self.assertEqual(segSeq.GetNumberOfDataNodes(), seq.GetNumberOfDataNodes())
        self.assertTrue(summary["ed_frames"] and summary["es_frames"])
        logic.shutdown()
        self.delayDisplay("Test passed")
