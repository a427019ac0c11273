"""The Slicer module file: its .ui has every widget it uses (loaded with PySide6 offscreen and grabbed
into the test's temporary folder: tests never write into the repository), and its Logic runs on a
real MRML scene without importing torch."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "EchoSAMSlicer" / "EchoSAMSlicer.py"
UI = ROOT / "EchoSAMSlicer" / "Resources" / "UI" / "EchoSAMSlicer.ui"
# Slicer/CTK widget classes -> the Qt base class a plain PySide6 loader can build
QT_BASES = {"qMRMLWidget": "QWidget", "qSlicerWidget": "QWidget", "ctkCollapsibleButton": "QGroupBox",
            "qMRMLNodeComboBox": "QComboBox", "qSlicerMarkupsPlaceWidget": "QToolButton"}


def used_ui_names() -> set:
    return set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text()))


def parameter_fields() -> set:
    tree = ast.parse(MODULE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EchoSAMSlicerParameterNode")
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


def ui_for_plain_qt() -> str:
    text = UI.read_text()
    text = re.sub(r"<customwidgets>.*?</customwidgets>", "", text, flags=re.S)
    text = re.sub(r"<connections>.*?</connections>", "", text, flags=re.S)
    text = re.sub(r'<property name="(nodeTypes|noneEnabled|addEnabled|removeEnabled|renameEnabled|collapsed|'
                  r'placeMultipleMarkups)">.*?</property>', "", text, flags=re.S)
    text = re.sub(r'(<widget class="ctkCollapsibleButton" name="\w+">\s*<property name=")text(")', r"\1title\2", text)
    for cls, base in QT_BASES.items():
        text = text.replace(f'class="{cls}"', f'class="{base}"')
    return text


def test_every_used_widget_exists_and_parameters_are_bound():
    names = set(re.findall(r'<widget class="[^"]+" name="(\w+)"', UI.read_text()))
    missing = used_ui_names() - names
    assert not missing, f"EchoSAMSlicer.py uses widgets the .ui lacks: {sorted(missing)}"
    bound = set(re.findall(r'<property name="SlicerParameterName" stdset="0">\s*<string>(\w+)</string>', UI.read_text()))
    assert bound <= parameter_fields(), bound - parameter_fields()
    assert {"inputNode", "device", "segmentLV", "promptStructure", "includePoints", "excludePoints", "roi",
            "checkEf"} <= bound


def test_ui_loads_in_qt_and_panel_screenshot(tmp_path):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QComboBox, QLabel, QWidget

    app = QApplication.instance() or QApplication([])
    data = QByteArray(ui_for_plain_qt().encode())
    buf = QBuffer(data)
    buf.open(QIODevice.ReadOnly)
    panel = QUiLoader().load(buf)
    assert panel is not None
    for name in used_ui_names():
        assert panel.findChild(QWidget, name) is not None, name
    # what the panel shows after loading a DICOM cine and choosing the demo model
    panel.findChild(QComboBox, "inputSelector").addItem("US cine (DICOM) browser")
    panel.findChild(QComboBox, "modelSelector").addItem("EchoSAM demo MemSAM (tiny)")
    panel.findChild(QLabel, "modelInfoLabel").setText("EchoSAM demo MemSAM (tiny) - 64 px - weights bundled - license: Apache-2.0")
    panel.findChild(QComboBox, "deviceSelector").addItems(["auto", "cpu", "cuda", "mps"])
    panel.findChild(QComboBox, "includePointsSelector").addItem("LV include")
    panel.findChild(QComboBox, "excludePointsSelector").addItem("None")
    panel.findChild(QComboBox, "roiSelector").addItem("None")
    for name, text in (("edFrameLabel", "0, 25"), ("esFrameLabel", "11"), ("efLabel", "56.3 %")):
        panel.findChild(QLabel, name).setText(text)
    from PySide6.QtWidgets import QTableWidget, QTableWidgetItem
    from echosam.slicer.display import results_rows
    table = panel.findChild(QTableWidget, "volumeTable")
    rows = results_rows({"ed_frames": [0, 25], "es_frames": [11], "edv_ml": 112.4, "esv_ml": 49.1, "ef_percent": 56.3,
                         "beats": [{"ed_frame": 0, "es_frame": 11, "edv_ml": 112.4, "esv_ml": 49.1,
                                    "ef_percent": 56.3, "complete_cycle": True}]})
    table.setRowCount(len(rows))
    for i, (name, value) in enumerate(rows):
        table.setItem(i, 0, QTableWidgetItem(name))
        table.setItem(i, 1, QTableWidgetItem(value))
    table.resizeColumnsToContents()
    assert [panel.findChild(QComboBox, "promptStructureSelector").itemText(i) for i in range(3)] == ["LV", "MYO", "LA"]
    table.verticalHeader().setDefaultSectionSize(22)
    panel.findChild(QWidget, "curvePlotFrame").setVisible(False)      # filled by qMRMLPlotWidget in Slicer only
    for name in ("cpuWarningLabel", "progressBar"):                 # hidden until they apply, as in Slicer
        panel.findChild(QWidget, name).setVisible(False)
    from PySide6.QtWidgets import QPushButton
    panel.findChild(QPushButton, "downloadButton").setEnabled(False)    # bundled weights: nothing to download
    from PySide6.QtWidgets import QCheckBox
    panel.findChild(QCheckBox, "lvCheckBox").setChecked(True)
    panel.resize(460, 880)
    panel.show()
    app.processEvents()
    image = panel.grab()
    shot = tmp_path / "panel.png"
    assert image.save(str(shot)) and shot.stat().st_size > 5000
    panel.close()


STUB_SCRIPT = r'''
import sys, types, json, unittest
from unittest import mock
sys.path.insert(0, {tests!r})
import numpy as np
import slicer
from slicer_scene import HeadlessScene, add_cine_sequence, dicom_us_matrix
h = HeadlessScene({cache!r})
scene = h.scene

slm = types.ModuleType("slicer.ScriptedLoadableModule")
class ScriptedLoadableModule:
    def __init__(self, parent): self.parent = parent
class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None): raise RuntimeError("needs Qt")
class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None): self.moduleName = type(self).__name__[:-5]
    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode(); node.SetSingletonTag(self.moduleName)
            node = slicer.mrmlScene.AddNode(node)
        return node
class ScriptedLoadableModuleTest(unittest.TestCase): pass
for c in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
    setattr(slm, c.__name__, c)
i18n = types.ModuleType("slicer.i18n"); i18n.tr = lambda t: t
pnw = types.ModuleType("slicer.parameterNodeWrapper"); pnw.parameterNodeWrapper = lambda cls: (lambda node: node); pnw.Choice = lambda choices: choices
sys.modules.update({{"qt": mock.MagicMock(), "ctk": mock.MagicMock(), "slicer.ScriptedLoadableModule": slm,
                    "slicer.i18n": i18n, "slicer.parameterNodeWrapper": pnw}})
sys.path.insert(0, {module_dir!r})
import EchoSAMSlicer as M

logic = M.EchoSAMSlicerLogic()
c = logic.controller
assert logic.getParameterNode().GetSingletonTag() == "EchoSAMSlicer"
assert "echosam-demo-memsam-tiny" in [e.name for e in logic.modelEntries()]
info = logic.modelInfo("sam-vit-b")
from echosam import model_zoo
assert info.status == "missing" and info.can_download and "license: Apache-2.0" in info.text   # empty cache
model_zoo.cache_dir().mkdir(parents=True, exist_ok=True)
(model_zoo.cache_dir() / model_zoo.get_entry("sam-vit-b").file).write_bytes(b"x")
assert logic.modelInfo("sam-vit-b").status == "cached" and not logic.modelInfo("sam-vit-b").can_download
assert logic.defaultModelName() == json.load(open(model_zoo.MODELS_JSON))["default"]
T, H, W = 8, 48, 48
frames = np.random.default_rng(0).integers(0, 255, (T, H, W)).astype(np.uint8)
seq, browser = add_cine_sequence(scene, frames, dicom_us_matrix())
assert c.browser_of(browser.GetProxyNode(seq)) is browser
assert not c.has_result(browser)
yy, xx = np.mgrid[0:H, 0:W]
labels = np.zeros((T, H, W), np.uint8)
for t in range(T):
    labels[t][(yy - 24) ** 2 + (xx - 24) ** 2 < (8 + 4 * np.cos(2 * np.pi * t / T)) ** 2] = 1
from echosam import mrml
from echosam.worker import SegmentationResult
summary = c.apply(SegmentationResult(labels, {{"lv": []}}, {{}}, ["lv"], False),
                  {{"browser": browser, "cine": mrml.cine_from_sequence(browser), "prompts": None}})
seg = mrml.find_segmentation_sequence(browser)
assert seg is not None and seg.GetNumberOfDataNodes() == T and c.has_result(browser)
assert mrml.load_session_state(seq)["locked"] == {{}} and c.can_undo(browser)
assert c.phase_frames(browser, "ed") == summary["ed_frames"] and summary["ed_frames"]
assert c.curve_chart(browser) is summary["chart"]
view = mrml.panel_plot_view(scene, summary["chart"])
assert view is mrml.panel_plot_view(scene, summary["chart"]) and view.GetPlotChartNodeID() == summary["chart"].GetID()
from echosam.slicer import install
assert logic.missingPackages() == install.missing_requirements(M.REQUIREMENTS) == []   # the test venv has them all
c.shutdown()
print("TORCH_IMPORTED", "torch" in sys.modules)
h.close()
'''


def test_module_logic_runs_without_torch(tmp_path):
    pytest.importorskip("slicer", reason="slicer-core (MRML libraries) is not installed for this Python")
    script = STUB_SCRIPT.format(tests=str(ROOT / "tests"), cache=str(tmp_path / "cache"),
                                module_dir=str(MODULE.parent))
    env = dict(os.environ, OMP_NUM_THREADS="1", ECHOSAM_CACHE=str(tmp_path / "models"))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "TORCH_IMPORTED False" in run.stdout, run.stdout[-2000:]


def test_module_imports_only_slicer_side_modules_at_top_level():
    tree = ast.parse(MODULE.read_text())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert top <= {"os", "sys", "typing", "ctk", "qt", "slicer", "vtk"}, top
    assert len(MODULE.read_text().splitlines()) < 600


def test_panel_binds_only_cines_and_names_what_propagate_does():
    """The input combo offers sequence browsers only (a lone volume is always refused); the device list
    includes MPS; Propagate says it takes every edited frame; the self-test skips without torch."""
    from echosam.slicer.display import DEVICES
    ui, text = UI.read_text(), MODULE.read_text()
    combo = re.search(r'name="inputSelector">.*?<stringlist>(.*?)</stringlist>', ui, re.S).group(1)
    assert re.findall(r"<string>(\w+)</string>", combo) == ["vtkMRMLSequenceBrowserNode"]
    assert "inputNode: Union[slicer.vtkMRMLSequenceBrowserNode, None]" in text
    assert 'DEVICES = ["auto", "cpu", "cuda", "mps"]' in text and tuple(DEVICES) == ("auto", "cpu", "cuda", "mps")
    assert "<string>Propagate edits</string>" in ui and "Propagate from current frame" not in ui
    assert 'self.skipTest("PyTorch is not installed' in text and "ensureDependencies(askConfirmation=False)" not in text
    for name in ("editFrameButton", "calibrateButton", "frameInfoLabel", "spacingLabel"):
        assert f'name="{name}"' in ui
