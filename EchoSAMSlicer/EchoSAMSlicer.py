"""EchoSAMSlicer: segment echocardiography cine loops with SAM-based video models.

Thin Slicer glue. The engine is the plain-Python package ``echosam`` in ``Logic/`` (MRML bridge in
``echosam.mrml``, model and session on a background worker in ``echosam.worker``). Nothing is
installed at import time or in constructors; torch is imported only after the install step.
"""
import os
import sys
from typing import Annotated, Union

import ctk
import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

LOGIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Logic")
if LOGIC_DIR not in sys.path:
    sys.path.insert(0, LOGIC_DIR)

REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "requirements.txt")
from echosam.device import DEVICES  # noqa: E402 (Logic/ is on sys.path only from here)
from echosam.model_zoo import default_model_name  # noqa: E402
PROMPT_STRUCTURES = ["LV", "MYO", "LA"]


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
    """inputNode: sequence browser. modelName: Models.json name or checkpoint file path (modelFamily: the
    family of an official .pth file). promptStructure: LV / MYO / LA, the structure markups prompt.
    A node Union must include None (the Union serializer cannot store None otherwise); its node classes
    become the combo box's nodeTypes. Combo-box-bound str fields need Choice (it fills the items)."""

    inputNode: Union[slicer.vtkMRMLSequenceBrowserNode, slicer.vtkMRMLScalarVolumeNode, None]
    modelName: str = default_model_name()
    modelFamily: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    segmentLV: bool = True
    segmentMYO: bool = False
    segmentLA: bool = False
    promptStructure: Annotated[str, Choice(PROMPT_STRUCTURES)] = "LV"
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
        self.plotWidget = None
        self._fileFamilies = {}     # checkpoint file path -> family chosen for it (official .pth)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/EchoSAMSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = EchoSAMSlicerLogic()

        for entry in self.logic.modelEntries():
            self.ui.modelSelector.addItem(entry.title, entry.name)
        for widget in (self.ui.includePlaceWidget, self.ui.excludePlaceWidget, self.ui.roiPlaceWidget):
            widget.setMRMLScene(slicer.mrmlScene)
        self.ui.progressBar.setVisible(False)
        self.ui.cpuWarningLabel.setVisible(False)
        self.setupCurvePlot()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelSelector.currentIndexChanged.connect(self.updateModelInfo)
        self.ui.deviceSelector.currentIndexChanged.connect(self.updateDeviceWarning)
        # explicit signature: currentNodeChanged is overloaded (vtkMRMLNode* and bool)
        self.ui.includePointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.includePlaceWidget.setCurrentNode)
        self.ui.excludePointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.excludePlaceWidget.setCurrentNode)
        self.ui.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.roiPlaceWidget.setCurrentNode)
        self.ui.downloadButton.clicked.connect(self.onDownload)
        self.ui.useFileButton.clicked.connect(self.onUseFile)
        self.ui.segmentButton.clicked.connect(lambda: self.run(fromEdit=False))
        self.ui.propagateButton.clicked.connect(lambda: self.run(fromEdit=True))
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

    def setupCurvePlot(self):
        """A plot widget for the LV volume curve inside the Results section (table only if unavailable)."""
        try:
            self.plotWidget = slicer.qMRMLPlotWidget()
            self.plotWidget.setMRMLScene(slicer.mrmlScene)
            self.plotWidget.minimumHeight = 180
            self.ui.curvePlotFrame.layout().addWidget(self.plotWidget)
        except (AttributeError, TypeError):
            self.plotWidget = None
        self.ui.curvePlotFrame.setVisible(False)
        self.ui.volumeTable.setHorizontalHeaderLabels([_("Quantity"), _("Value")])

    def cleanup(self):
        self.removeObservers()
        if self._timer:
            self._timer.stop()
        if self.logic:
            self.logic.controller.shutdown()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self.logic.controller.session_key = None
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
            self.selectModel(self._parameterNode.modelName, self._parameterNode.modelFamily)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    # ---- model chooser ----------------------------------------------------------------------------
    def selectModel(self, spec, family=""):
        """Select a registry model or a checkpoint file (added to the chooser once)."""
        from echosam import slicer_logic
        index = self.ui.modelSelector.findData(spec)
        if spec and slicer_logic.is_file_spec(spec):
            self._fileFamilies[spec] = family
        if index < 0 and spec and slicer_logic.is_file_spec(spec):
            label = _("File: {name} ({family})").format(name=os.path.basename(spec), family=family or _("own format"))
            self.ui.modelSelector.addItem(label, spec)
            index = self.ui.modelSelector.count - 1
        self.ui.modelSelector.setCurrentIndex(max(index, 0))
        self.updateModelInfo()

    def currentModelInfo(self):
        spec = self.ui.modelSelector.currentData
        try:
            return self.logic.modelInfo(spec, self._fileFamilies.get(spec, "")) if spec else None
        except ValueError:
            return None

    def updateModelInfo(self, *args):
        info = self.currentModelInfo()
        if info and self._parameterNode:
            self._parameterNode.modelName = info.spec
            self._parameterNode.modelFamily = self._fileFamilies.get(info.spec, "")
        self.ui.modelInfoLabel.text = info.text if info else ""
        self.ui.modelInfoLabel.toolTip = info.tooltip if info else ""
        self.ui.modelInfoLabel.styleSheet = "" if info is None or info.weights_present else "color: #c0392b"
        if info:
            self.ui.promptsCollapsibleButton.collapsed = not info.prompted
        self.updateButtons()

    def onDownload(self):
        info = self.currentModelInfo()
        with slicer.util.tryWithErrorDisplay(_("The download could not start."), waitCursor=True):
            self.startRun(self.logic.controller.submit_download(info.spec), _("Downloading {title}...").format(title=info.title))

    def onUseFile(self):
        from echosam import model_zoo, slicer_logic
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Select a checkpoint file"), "",
                                              _("Checkpoints (*.safetensors *.json *.pth *.pt *.bin *.ckpt)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("This file cannot be used."), waitCursor=True):
            info = self.currentModelInfo()
            entry = None if info is None or slicer_logic.is_file_spec(info.spec) else model_zoo.get_entry(info.spec)
            plan = slicer_logic.plan_use_file(path, entry)
            if plan.action == "register":
                if slicer.util.confirmYesNoDisplay(plan.message):
                    self.startRun(self.logic.controller.submit_use_file(plan.path, plan.entry_name),
                                  _("Checking and copying {name}...").format(name=os.path.basename(path)))
                    return
                plan = slicer_logic.plan_use_file(path, None)
            family = ""
            if plan.action == "official":
                dialog = qt.QInputDialog(self.parent)
                dialog.setWindowTitle(_("Model family"))
                dialog.setLabelText(plan.message)
                dialog.setComboBoxItems(list(slicer_logic.FILE_FAMILIES))
                dialog.setTextValue(plan.family)
                if not dialog.exec_():
                    return
                family = dialog.textValue()
            self.selectModel(plan.path, family)

    def updateDeviceWarning(self, *args):
        self.ui.cpuWarningLabel.setVisible(self.ui.deviceSelector.currentText == "cpu")

    def updateButtons(self, *args):
        from echosam import slicer_logic
        p = self._parameterNode
        if self.logic is None or p is None:
            return
        busy, info = self.logic.controller.busy, self.currentModelInfo()
        states = slicer_logic.button_states(
            has_input=bool(p.inputNode), has_structures=p.segmentLV or p.segmentMYO or p.segmentLA, busy=busy,
            prompted=bool(info and info.prompted), weights_present=bool(info and info.weights_present),
            can_download=bool(info and info.can_download), has_result=self.logic.controller.has_result(p.inputNode))
        for name, enabled in states.items():
            getattr(self.ui, name).enabled = enabled
        self.ui.segmentButton.text = _("Segmenting... (Cancel to stop)") if busy else _("Segment")
        if not p.inputNode:
            self.ui.segmentButton.toolTip = _("Select an input cine first")
        elif info is not None and not info.weights_present:
            self.ui.segmentButton.toolTip = _("The model's weights are missing: press Download or use a file you have")
        else:
            self.ui.segmentButton.toolTip = _("Segment the whole loop from the prompts")

    def currentBrowser(self):
        node = self._parameterNode.inputNode if self._parameterNode else None
        return self.logic.controller.browser_of(node) if node else None

    def currentFrame(self):
        browser = self.currentBrowser()
        return max(browser.GetSelectedItemNumber(), 0) if browser else 0

    # ---- actions --------------------------------------------------------------------------------
    def structures(self):
        from echosam import slicer_logic
        p = self._parameterNode
        return slicer_logic.structures_from_flags(p.segmentLV, p.segmentMYO, p.segmentLA)

    def run(self, fromEdit):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            if not self.logic.ensureDependencies(askConfirmation=True):
                return
            device = self.logic.resolveDevice(p.device)
            self.ui.cpuWarningLabel.setVisible(device == "cpu")
            run = self.logic.controller.submit_segmentation(
                p.inputNode, p.modelName, device, self.structures(), frame=self.currentFrame(),
                prompt_structure=p.promptStructure, include=p.includePoints, exclude=p.excludePoints, roi=p.roi,
                family=p.modelFamily, from_edit=fromEdit)
            if fromEdit and not run.data["changed"]:
                self.ui.statusLabel.text = _("No edit found on this frame; propagating the current prompts.")
            self.startRun(run, _("Working..."))

    def startRun(self, run, text):
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.maximum = 0
        self.ui.statusLabel.text = text
        self._timer.start()
        self.updateButtons()

    def pollWorker(self):
        for a in self.logic.controller.poll():
            if a.kind == "progress":
                self.ui.progressBar.maximum = a.bar_max
                self.ui.progressBar.value = a.bar_value
                self.ui.progressBar.format = a.bar_format
                self.ui.statusLabel.text = a.text
            elif a.kind == "error":
                self.ui.statusLabel.text = _("Failed.")
                slicer.util.errorDisplay(a.text, detailedText=a.details or None)
            elif a.kind in ("cancelled", "result"):
                self.ui.statusLabel.text = a.text
                if a.kind == "result" and isinstance(a.value, dict):
                    self.showResults(a.value)
                if a.run.kind in ("download", "use_file"):
                    self.updateModelInfo()
        if not self.logic.controller.busy:
            self._timer.stop()
            self.ui.progressBar.setVisible(False)
        self.updateButtons()

    def showResults(self, summary):
        from echosam import slicer_logic
        self.ui.edFrameLabel.text = ", ".join(map(str, summary["ed_frames"])) or "-"
        self.ui.esFrameLabel.text = ", ".join(map(str, summary["es_frames"])) or "-"
        self.ui.efLabel.text = slicer_logic.ef_text(summary)
        self.ui.efLabel.toolTip = summary.get("message", "")
        rows = slicer_logic.results_rows(summary)
        self.ui.volumeTable.setRowCount(len(rows))
        for i, (name, value) in enumerate(rows):
            self.ui.volumeTable.setItem(i, 0, qt.QTableWidgetItem(name))
            self.ui.volumeTable.setItem(i, 1, qt.QTableWidgetItem(value))
        self.ui.volumeTable.resizeColumnsToContents()
        if self.plotWidget is not None and summary.get("chart") is not None:
            from echosam import mrml
            self.plotWidget.setMRMLPlotViewNode(mrml.panel_plot_view(slicer.mrmlScene, summary["chart"]))
            self.ui.curvePlotFrame.setVisible(True)

    def onLockToggle(self):
        with slicer.util.tryWithErrorDisplay(_("Could not lock or unlock the frame."), waitCursor=True):
            run = self.logic.controller.submit_lock(self._parameterNode.inputNode, self.currentFrame(), self.structures())
            self.startRun(run, _("Locking...") if run.data["plan"] == "lock" else _("Unlocking..."))

    def onUndo(self):
        with slicer.util.tryWithErrorDisplay(_("Could not undo."), waitCursor=True):
            self.startRun(self.logic.controller.submit_undo(self._parameterNode.inputNode), _("Undoing..."))

    def onCancel(self):
        if self.logic:
            self.logic.controller.cancel()

    def jumpTo(self, phase):
        browser = self.currentBrowser()
        with slicer.util.tryWithErrorDisplay(_("Could not read the ED/ES frames."), waitCursor=False):
            frames = self.logic.controller.phase_frames(browser, phase) if browser else []
            if frames:
                browser.SetSelectedItemNumber(frames[0])

    def onShowCurve(self):
        chart = self.logic.controller.curve_chart(self.currentBrowser())
        if chart is None:
            return
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalPlotView)
        slicer.app.applicationLogic().GetSelectionNode().SetActivePlotChartID(chart.GetID())
        slicer.app.applicationLogic().PropagatePlotChartSelection()


class EchoSAMSlicerLogic(ScriptedLoadableModuleLogic):
    """Slicer-side adapter: parameter node, dependency install, device choice. The work (worker runs,
    MRML writes, decisions) is done by ``echosam.slicer_logic.Controller`` (``self.controller``)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from echosam.slicer_logic import Controller
        self.controller = Controller()

    def getParameterNode(self):
        return EchoSAMSlicerParameterNode(super().getParameterNode())

    def modelEntries(self):
        from echosam import model_zoo
        return model_zoo.load_registry()

    def modelInfo(self, spec, family=""):
        from echosam import slicer_logic
        return slicer_logic.model_info(spec, family)

    # ---- dependencies (Slicer only; called from the Segment button) -----------------------------
    @staticmethod
    def slicerPackaging():
        """``slicer.packaging`` (Slicer >= 5.11) or None; a submodule, so import it rather than hasattr()."""
        try:
            import slicer.packaging
        except ImportError:
            return None
        return slicer.packaging if hasattr(slicer.packaging, "pip_ensure") else None

    def missingPackages(self):
        """Requirements not satisfied (with version floors where slicer.packaging.pip_check exists)."""
        from echosam import install
        packaging = self.slicerPackaging()
        if packaging is None:
            return install.missing_requirements(REQUIREMENTS)
        return [r for r in install.load_requirements(REQUIREMENTS)
                if install.requirement_name(r) not in install.SKIP_PACKAGES and not packaging.pip_check(r)]

    def ensureDependencies(self, askConfirmation=True):
        """torch via PyTorchUtils (no forced CUDA backend), the rest via pip_ensure; True when ready."""
        from echosam import install
        missing = self.missingPackages()
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
        if not missing:
            return True
        packaging = self.slicerPackaging()
        if packaging is not None:  # we asked above: no second prompt
            packaging.pip_ensure(missing, skip_packages=list(install.SKIP_PACKAGES), prompt_install=False,
                                 requester="EchoSAM")
        else:  # Slicer < 5.11
            slicer.util.pip_install(install.pip_arguments(missing))
        return True

    def resolveDevice(self, choice):
        from echosam.device import resolve_device  # imports torch: only after ensureDependencies
        return resolve_device(choice)


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
        controller = logic.controller
        controller.submit_segmentation(browser, default_model_name(), "cpu", ["lv"], frame=0, include=points)
        self.assertTrue(controller.worker.wait_idle(600))
        actions = [a for a in controller.poll() if a.kind in ("result", "error", "cancelled")]
        self.assertEqual(actions[-1].kind, "result", actions[-1].text)
        summary = actions[-1].value
        segSeq = mrml.find_segmentation_sequence(browser)
        self.assertIsNotNone(segSeq)
        self.assertEqual(segSeq.GetNumberOfDataNodes(), seq.GetNumberOfDataNodes())
        self.assertTrue(summary["ed_frames"] and summary["es_frames"])
        controller.shutdown()
        self.delayDisplay("Test passed")
