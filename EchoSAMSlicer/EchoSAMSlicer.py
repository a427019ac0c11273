"""EchoSAMSlicer: segment echocardiography cine loops with SAM-based video models.

Thin Slicer glue: widgets bound to ``echosam.slicer`` (the Qt-free controller, install policy, device
choice, panel text) in ``Logic/``. Nothing is installed at import time or in constructors; torch is
imported only after the install step.
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
DEVICES = ["auto", "cpu", "cuda", "mps"]      # echosam.slicer.display.DEVICES (checked by the tests)
PROMPT_STRUCTURES = ["LV", "MYO", "LA"]
ORIENTATIONS = ["standard", "mirrored", "auto"]   # echosam.orientation.ORIENTATIONS (checked by the tests)


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
            "or an ROI on any frame (each stays on the frame it was placed on), press Segment, correct any frames "
            "('Edit this frame' opens Segment Editor) and press 'Propagate edits': every frame you changed is "
            "locked and never overwritten. Undo works after saving and reloading the scene. "
            "The LV curve, ED/ES frames and EF are computed from the result. Research use only: not a medical device."
            "<br><br>Models: MemSAM (Deng et al., CVPR 2024, github.com/dengxl0520/MemSAM), "
            "MediViSTA (Kim et al., arXiv:2309.13539 / IEEE JBHI 2025, github.com/SekeunKim/MediViSTA), "
            "MA-SAM (Chen et al., Medical Image Analysis 2024, github.com/cchen-cc/MA-SAM), all built on "
            "Segment Anything (Kirillov et al., ICCV 2023, Apache-2.0). Check each upstream repository's license "
            "before using its weights; the bundled demo models are Apache-2.0 and trained on synthetic data only.")
        self.parent.acknowledgementText = _("Built on 3D Slicer, Segment Anything and the MemSAM, MediViSTA and MA-SAM papers.")


@parameterNodeWrapper
class EchoSAMSlicerParameterNode:
    """inputNode: sequence browser. modelName: Models.json name or checkpoint file path, "" = Models.json's
    ``default`` (the one place the default is written; modelFamily: the
    family of an official .pth file). promptStructure: LV / MYO / LA, the structure markups prompt.
    A node Union must include None (the Union serializer cannot store None otherwise); its node classes
    become the combo box's nodeTypes. Combo-box-bound str fields need Choice (it fills the items)."""

    inputNode: Union[slicer.vtkMRMLSequenceBrowserNode, None]
    modelName: str = ""
    modelFamily: str = ""
    device: Annotated[str, Choice(DEVICES)] = "auto"
    forceFp32: bool = False
    checkEf: bool = True
    orientation: Annotated[str, Choice(ORIENTATIONS)] = "standard"
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
        self._installTimer = None
        self._install = None
        self._browserTag = None
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
        self.ui.editFrameButton.clicked.connect(self.onEditFrame)
        self.ui.calibrateButton.clicked.connect(self.onCalibrate)
        self.ui.lockButton.clicked.connect(self.onLockToggle)
        self.ui.undoButton.clicked.connect(self.onUndo)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.jumpEDButton.clicked.connect(lambda: self.jumpTo("ed"))
        self.ui.jumpESButton.clicked.connect(lambda: self.jumpTo("es"))
        self.ui.showCurveButton.clicked.connect(self.onShowCurve)

        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.timeout.connect(self.pollWorker)
        self._installTimer = qt.QTimer()
        self._installTimer.setInterval(200)
        self._installTimer.timeout.connect(self.pollInstall)
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
        if self._install:
            self._install.cancel()
        if self.logic:
            self.logic.controller.shutdown()

    def enter(self):
        """Coming back (e.g. from Segment Editor) keeps the browser's frame; the frame line is refreshed."""
        self.initializeParameterNode()
        self.updateFrameInfo()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

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
            self.selectModel(self._parameterNode.modelName or self.logic.defaultModelName(),
                             self._parameterNode.modelFamily)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    # ---- model chooser ----------------------------------------------------------------------------
    def selectModel(self, spec, family=""):
        """Select a registry model or a checkpoint file (added to the chooser once)."""
        from echosam.slicer import chooser
        index = self.ui.modelSelector.findData(spec)
        if spec and chooser.is_file_spec(spec):
            self._fileFamilies[spec] = family
        if index < 0 and spec and chooser.is_file_spec(spec):
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
        from echosam import model_zoo
        from echosam.slicer import chooser
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Select a checkpoint file"), "",
                                              _("Checkpoints (*.safetensors *.json *.pth *.pt *.bin *.ckpt)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("This file cannot be used."), waitCursor=True):
            info = self.currentModelInfo()
            entry = None if info is None or chooser.is_file_spec(info.spec) else model_zoo.get_entry(info.spec)
            plan = chooser.plan_use_file(path, entry)
            if plan.action == "register":
                if slicer.util.confirmYesNoDisplay(plan.message):
                    self.startRun(self.logic.controller.submit_use_file(plan.path, plan.entry_name),
                                  _("Checking and copying {name}...").format(name=os.path.basename(path)))
                    return
                plan = chooser.plan_use_file(path, None)
            family = ""
            if plan.action == "official":
                dialog = qt.QInputDialog(self.parent)
                dialog.setWindowTitle(_("Model family"))
                dialog.setLabelText(plan.message)
                dialog.setComboBoxItems(list(chooser.FILE_FAMILIES))
                dialog.setTextValue(plan.family)
                if not dialog.exec_():
                    return
                family = dialog.textValue()
            self.selectModel(plan.path, family)

    def updateDeviceWarning(self, *args):
        self.ui.cpuWarningLabel.setVisible(self.ui.deviceSelector.currentText == "cpu")

    def updateButtons(self, *args):
        from echosam.slicer import display
        p = self._parameterNode
        if self.logic is None or p is None:
            return
        controller = self.logic.controller
        busy, info = controller.busy or self._install is not None, self.currentModelInfo()
        self.reconcilePromptStructure()
        states = display.button_states(
            has_input=bool(p.inputNode), has_structures=p.segmentLV or p.segmentMYO or p.segmentLA, busy=busy,
            prompted=bool(info and info.prompted), weights_present=bool(info and info.weights_present),
            can_download=bool(info and info.can_download), has_result=controller.has_result(p.inputNode),
            can_undo=controller.can_undo(p.inputNode))
        for name, enabled in states.items():
            getattr(self.ui, name).enabled = enabled
        self.ui.segmentButton.text = _("Segmenting... (Cancel to stop)") if busy else _("Segment")
        if not p.inputNode:
            self.ui.segmentButton.toolTip = _("Select an input cine first")
        elif info is not None and not info.weights_present:
            self.ui.segmentButton.toolTip = _("The model's weights are missing: press Download or use a file you have")
        else:
            self.ui.segmentButton.toolTip = _("Segment the whole loop from the prompts")
        self.watchInput()
        self.updateFrameInfo()

    def reconcilePromptStructure(self):
        """The prompt structure is always one of the ticked structures."""
        from echosam.slicer import prompts
        p = self._parameterNode
        ticked = [k.upper() for k, on in (("lv", p.segmentLV), ("myo", p.segmentMYO), ("la", p.segmentLA)) if on]
        choice = prompts.reconcile_prompt_structure(p.promptStructure, ticked)
        if choice != p.promptStructure:
            p.promptStructure = choice

    def watchInput(self):
        """Observe the browser (frame changes -> frame line) and the markups (points stamped with their frame)."""
        p = self._parameterNode
        browser = self.currentBrowser()
        if self._browserTag and self._browserTag[0] is not browser:
            self._browserTag[0].RemoveObserver(self._browserTag[1])
            self._browserTag = None
        if browser is not None and self._browserTag is None:
            self._browserTag = (browser, browser.AddObserver(vtk.vtkCommand.ModifiedEvent, self.updateFrameInfo))
        if browser is not None:
            self.logic.controller.watch_markups(browser, [p.includePoints, p.excludePoints, p.roi])

    def updateFrameInfo(self, *args):
        from echosam.slicer import display
        p = self._parameterNode
        if self.logic is None or p is None or not p.inputNode:
            self.ui.frameInfoLabel.text = ""
            return
        info = self.logic.controller.frames_info(p.inputNode)
        self.ui.frameInfoLabel.text = display.frames_text(info["current"], info["n_frames"], info["prompt_frames"],
                                                          info["locked"]) if info else ""

    def currentBrowser(self):
        node = self._parameterNode.inputNode if self._parameterNode else None
        return self.logic.controller.browser_of(node) if node else None

    def currentFrame(self):
        browser = self.currentBrowser()
        return max(browser.GetSelectedItemNumber(), 0) if browser else 0

    # ---- actions --------------------------------------------------------------------------------
    def structures(self):
        from echosam.slicer import prompts
        p = self._parameterNode
        return prompts.structures_from_flags(p.segmentLV, p.segmentMYO, p.segmentLA)

    def run(self, fromEdit):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            if not self.ensureDependencies():
                return
            from echosam.slicer import devices
            device = devices.resolve_device(p.device)
            self.ui.cpuWarningLabel.setVisible(device == "cpu")
            run = self.logic.controller.submit_segmentation(
                p.inputNode, p.modelName, device, self.structures(), frame=self.currentFrame(),
                prompt_structure=p.promptStructure, include=p.includePoints, exclude=p.excludePoints, roi=p.roi,
                family=p.modelFamily, from_edit=fromEdit, precision="fp32" if p.forceFp32 else "auto",
                ef_check=p.checkEf, orientation=p.orientation)
            corrected = run.data["corrected"]
            text = (_("Corrections from frames {frames}...").format(frames=", ".join(map(str, corrected))) if corrected
                    else _("No edited frame found; propagating the stored prompts...") if fromEdit else _("Working..."))
            self.startRun(run, text)

    def ensureDependencies(self):
        """True when torch and the requirements import; otherwise ask once and install in the background."""
        from echosam.slicer import install
        if self._install is not None:
            return False
        missing, needTorch = self.logic.missingPackages(), not install.has_module("torch")
        if not missing and not needTorch:
            return True
        if not slicer.util.confirmOkCancelDisplay(install.install_message(missing, needTorch)):
            return False
        self._install = install.start_install(missing, needTorch)
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.maximum = 0
        self.ui.statusLabel.text = _("Installing Python packages (Slicer stays usable)...")
        self._installTimer.start()
        self.updateButtons()
        return False

    def pollInstall(self):
        job = self._install
        for e in job.poll():
            if e.kind == "step":
                self.ui.progressBar.format = f"{e.text} ({e.step}/{e.steps})"
                self.ui.statusLabel.text = e.text
            elif e.kind == "line":
                self.ui.statusLabel.toolTip = e.text
        if not job.finished:
            return
        self._installTimer.stop()
        self._install = None
        self.ui.progressBar.setVisible(False)
        outcome = job.outcome
        self.ui.statusLabel.text = outcome.message
        if not outcome.ok:
            slicer.util.errorDisplay(outcome.message, detailedText="\n".join(outcome.log[-200:]))
        elif outcome.restart_required and slicer.util.confirmYesNoDisplay(outcome.message + " " + _("Restart now?")):
            slicer.util.restart()
        else:
            self.ui.statusLabel.text = _("Packages installed: press Segment.")
        self.updateButtons()

    def startRun(self, run, text):
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.maximum = 0
        self.ui.statusLabel.text = text
        self._timer.start()
        self.updateButtons()

    def pollWorker(self):
        actions, keepPolling = self.logic.controller.tick()
        for a in actions:
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
        if not keepPolling:
            self._timer.stop()
            self.ui.progressBar.setVisible(False)
        self.updateButtons()

    def showResults(self, summary):
        from echosam.slicer import display
        self.ui.edFrameLabel.text = ", ".join(map(str, summary.get("ed_frames", []))) or "-"
        self.ui.esFrameLabel.text = ", ".join(map(str, summary.get("es_frames", []))) or "-"
        self.ui.efLabel.text = display.ef_text(summary)
        self.ui.efLabel.toolTip = summary.get("message", "")
        self.ui.efLabel.styleSheet = "color: #c0392b" if summary.get("ef_flag") else ""   # depends on the box
        self.ui.spacingLabel.text = summary.get("spacing_how", "")
        self.ui.spacingLabel.styleSheet = "" if summary.get("calibrated", True) else "color: #c0392b"
        self.ui.computePathLabel.text = display.compute_text(summary)
        rows = display.results_rows(summary)
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
            self.ui.statusLabel.text = self.logic.controller.toggle_lock(self._parameterNode.inputNode,
                                                                         self.currentFrame(), self.structures())
        self.updateButtons()

    def onUndo(self):
        with slicer.util.tryWithErrorDisplay(_("Could not undo."), waitCursor=True):
            summary = self.logic.controller.undo(self._parameterNode.inputNode)
            self.showResults(summary)
            self.ui.statusLabel.text = _("Undone: {what}.").format(what=summary["undone"])
        self.updateButtons()

    def onEditFrame(self):
        """Segment Editor on the proxy segmentation, the cine's proxy volume as source, at this frame."""
        with slicer.util.tryWithErrorDisplay(_("Could not open the frame for editing."), waitCursor=True):
            nodes = self.logic.controller.edit_frame(self._parameterNode.inputNode)
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.util.getModuleWidget("SegmentEditor").editor
            editor.setSegmentationNode(nodes["segmentation"])
            editor.setSourceVolumeNode(nodes["source_volume"])

    def onCalibrate(self):
        """Type the pixel spacing (mm), or use the first line markup in the scene over a known distance."""
        with slicer.util.tryWithErrorDisplay(_("Could not calibrate."), waitCursor=True):
            line = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLMarkupsLineNode")
            if line is not None and line.GetNumberOfControlPoints() >= 2:
                known = qt.QInputDialog.getDouble(self.parent, _("Calibrate"), _("Length of line {name} in mm:").format(
                    name=line.GetName()), 10.0, 0.01, 1000.0, 2)
                summary = self.logic.controller.calibrate(self._parameterNode.inputNode, line=line, known_mm=known)
            else:
                mm = qt.QInputDialog.getDouble(self.parent, _("Calibrate"), _("Pixel spacing (mm per pixel); or "
                                               "cancel and draw a line over a known distance first:"), 0.3, 0.001, 10.0, 4)
                summary = self.logic.controller.calibrate(self._parameterNode.inputNode, spacing=(mm, mm))
            self.showResults(summary)

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
    """Slicer-side adapter: the parameter node and the requirement check. The work (runs, MRML writes,
    undo, calibration, decisions) is ``echosam.slicer.controller.Controller`` (``self.controller``);
    install policy and device choice are ``echosam.slicer.install`` and ``echosam.slicer.devices``."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from echosam.slicer.controller import Controller
        self.controller = Controller()

    def getParameterNode(self):
        return EchoSAMSlicerParameterNode(super().getParameterNode())

    def modelEntries(self):
        from echosam import model_zoo
        return model_zoo.load_registry()

    def defaultModelName(self):
        from echosam import model_zoo
        return model_zoo.default_model_name()

    def modelInfo(self, spec, family=""):
        from echosam.slicer import chooser
        return chooser.model_info(spec, family)

    def missingPackages(self):
        from echosam.slicer import install
        return install.missing_requirements(REQUIREMENTS)


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
        from echosam.slicer import install
        if not install.has_module("torch"):
            self.delayDisplay("Skipped: PyTorch is not installed (press Segment once to install it)")
            self.skipTest("PyTorch is not installed; the self-test never installs packages.")

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
        self.delayDisplay("Segmenting with the bundled demo model")
        controller = logic.controller
        controller.submit_segmentation(browser, logic.defaultModelName(), "cpu", ["lv"], frame=0, include=points)
        self.assertTrue(controller.worker.wait_idle(600))
        actions = [a for a in controller.tick()[0] if a.kind in ("result", "error", "cancelled")]
        self.assertEqual(actions[-1].kind, "result", actions[-1].text)
        summary = actions[-1].value
        segSeq = mrml.find_segmentation_sequence(browser)
        self.assertIsNotNone(segSeq)
        self.assertEqual(segSeq.GetNumberOfDataNodes(), seq.GetNumberOfDataNodes())
        self.assertTrue(summary["ed_frames"] and summary["es_frames"])
        controller.shutdown()
        self.delayDisplay("Test passed")
