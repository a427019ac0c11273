"""Headless Slicer scene for tests: the real MRML classes of the slicer-core wheel, no app, no Qt.

`headless_scene()` builds a scene with the module logics the app would create (colors, volumes,
segmentations, sequences, markups), the remote-IO cache needed to read ``.mrb``, and the observer
that removes display nodes of removed nodes (the app does that; without it slicer.util helpers
leak display nodes). It sets ``slicer.mrmlScene`` / ``slicer.modules`` as the app would.
Use the `scene` pytest fixture from a test module: ``from slicer_scene import scene  # noqa``.

Also: helpers to build cines the way Slicer's DICOM ultrasound import builds them, and `disk` masks.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import slicer
import slicer.util
import vtk


class HeadlessScene:
    """The scene plus Python references to the logics that must live as long as it does."""

    def __init__(self, cache_dir: str):
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        colors = self.app_logic.GetColorLogic()
        colors.SetMRMLScene(self.scene)
        colors.AddDefaultColorNodes()
        self.app_logic.SetModuleLogic("Colors", colors)
        self.logics = {}
        for key, cls, module_name in [("volumes", slicer.vtkSlicerVolumesLogic, "Volumes"),
                                      ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic, "Segmentations"),
                                      ("sequences", slicer.vtkSlicerSequencesLogic, "Sequences"),
                                      ("markups", slicer.vtkSlicerMarkupsLogic, "Markups")]:
            logic = cls()
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self.app_logic.SetModuleLogic(module_name, logic)
            self.logics[key] = logic
        self.remote_io = slicer.vtkMRMLRemoteIOLogic()
        self.remote_io.SetMRMLScene(self.scene)
        self.remote_io.SetMRMLApplicationLogic(self.app_logic)
        self.remote_io.GetCacheManager().SetRemoteCacheDirectory(str(cache_dir))
        self.data_io = slicer.vtkDataIOManagerLogic()
        self.data_io.SetMRMLScene(self.scene)
        self.data_io.SetMRMLApplicationLogic(self.app_logic)
        self.data_io.SetAndObserveDataIOManager(self.remote_io.GetDataIOManager())
        self.remote_io.AddDataIOToScene()

        @vtk.calldata_type(vtk.VTK_OBJECT)
        def remove_display_nodes(caller, _event, node):
            if caller is None or node is None or not hasattr(node, "GetNumberOfDisplayNodes"):
                return
            for i in range(node.GetNumberOfDisplayNodes()):
                display = node.GetNthDisplayNode(i)
                if display is not None:
                    caller.RemoveNode(display)

        self._observer = remove_display_nodes
        self._tag = self.scene.AddObserver(slicer.vtkMRMLScene.NodeAboutToBeRemovedEvent, remove_display_nodes)
        slicer.mrmlScene = self.scene
        slicer.modules = types.SimpleNamespace(
            **{k: types.SimpleNamespace(logic=(lambda lg=lg: lg)) for k, lg in self.logics.items()})

    def close(self) -> None:
        self.scene.Clear(1)
        self.scene.RemoveObserver(self._tag)


@pytest.fixture
def headless(tmp_path):
    h = HeadlessScene(tmp_path / "cache")
    yield h
    h.close()


@pytest.fixture
def scene(headless):
    return headless.scene


# ---- cines as Slicer's DICOM ultrasound import makes them --------------------------------------
def dicom_us_matrix(spacing=(0.31, 0.27), origin=(12.0, -20.0, 5.0), angle_deg=25.0) -> np.ndarray:
    """IJK->RAS of a single-slice frame: (row, col) spacing in mm, a rotation and the 180-degree
    in-plane flip (LPS->RAS) of DICOM import, anisotropic, so geometry mistakes show up."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    directions = rot @ np.diag([-1.0, -1.0, 1.0])
    m = np.eye(4)
    m[:3, :3] = directions * np.array([spacing[1], spacing[0], 1.0])[None, :]
    m[:3, 3] = origin
    return m


def add_cine_sequence(scene, frames: np.ndarray, ijk_to_ras: np.ndarray, dt: float = 0.033,
                      name: str = "US cine", index_name: str = "time", unit: str = "s", rgb: bool = False):
    """(T, H, W) grey or (T, H, W, 3) RGB frames -> volume sequence + browser (returns both)."""
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    seq.SetIndexName(index_name)
    seq.SetIndexUnit(unit)
    seq.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    template = slicer.vtkMRMLVectorVolumeNode() if rgb else slicer.vtkMRMLScalarVolumeNode()
    if rgb:
        template.SetVoxelVectorType(slicer.vtkMRMLVolumeNode.VoxelVectorTypeColorRGB)
    template.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    for i, f in enumerate(frames):
        slicer.util.updateVolumeFromArray(template, np.ascontiguousarray(f[None]))
        value = f"{i * dt:.4f}" if index_name == "time" else str(i)
        seq.SetDataNodeAtValue(template, value)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    return seq, browser


def disk(cy, cx, r, h: int, w: int) -> np.ndarray:
    """(h, w) boolean mask of the open disk of radius ``r`` pixels centred on row ``cy``, column ``cx``."""
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2


def matrix_of(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)
