"""Our .seq.nrrd files are what Slicer writes and reads: header fields checked as text, then read
with Slicer's own `vtkMRMLVolumeSequenceStorageNode` (slicer-core wheel, no app), and files that
Slicer writes are read by `read_cine`/`read_labels`."""
from __future__ import annotations

import numpy as np
import pytest

from echosam.cine import Cine
from echosam.io import read_cine, read_labels, write_cine, write_labels

slicer = pytest.importorskip("slicer")
import slicer.util as su  # noqa: E402
import vtk  # noqa: E402

TIMES = np.array([0.0, 1 / 30, 0.07, 0.1, 0.135])


def _header(path) -> dict:
    raw = path.read_bytes().split(b"\n\n", 1)[0].decode()
    out = {}
    for line in raw.splitlines()[1:]:
        if line.startswith("#"):
            continue
        key, sep, value = line.partition(":=") if ":=" in line else line.partition(": ")
        out[key] = value
    return out


def _cine(geometry):
    frames = np.random.default_rng(5).integers(0, 256, (5, 14, 11)).astype(np.uint8)
    return Cine.from_array(frames, ijk_to_ras=geometry, frame_times=TIMES, name="echo")


def _read_with_slicer(path):
    scene = slicer.vtkMRMLScene()
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(seq) == 1
    return scene, seq


def _ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return su.arrayFromVTKMatrix(m)


def test_header_has_the_fields_slicer_writes(tmp_path, rotated_geometry):
    path = write_cine(_cine(rotated_geometry), tmp_path / "echo.seq.nrrd")
    h = _header(path)
    assert h["dimension"] == "4" and h["sizes"] == "11 14 1 5"
    assert h["space"] == "left-posterior-superior"
    assert h["kinds"] == "domain domain domain list"
    assert h["labels"] == '"" "" "" "time"' and h["units"] == '"" "" "" "s"'
    assert h["DataNodeClassName"] == "vtkMRMLScalarVolumeNode"
    assert h["axis 3 index type"] == "numeric"
    np.testing.assert_array_equal([float(v) for v in h["axis 3 index values"].split()], TIMES)
    dirs = [np.array([float(x) for x in d.strip("()").split(",")]) for d in h["space directions"].split()[:3]]
    lps = np.diag([-1.0, -1.0, 1.0])
    for col in range(3):                          # RAS column c of IJK-to-RAS -> LPS direction of axis c
        np.testing.assert_array_equal(dirs[col], lps @ rotated_geometry[:3, col])
    assert h["space directions"].split()[3] == "none"
    origin = np.array([float(x) for x in h["space origin"].strip("()").split(",")])
    np.testing.assert_array_equal(origin, lps @ rotated_geometry[:3, 3])


def test_slicer_reads_our_cine_and_labels(tmp_path, rotated_geometry):
    cine = _cine(rotated_geometry)
    labels = (cine.frames // 64).astype(np.uint8)                  # values 0..3
    write_cine(cine, tmp_path / "echo.seq.nrrd")
    write_labels(labels, cine, tmp_path / "seg.seq.nrrd")
    for name, cls, expected in (("echo.seq.nrrd", "vtkMRMLScalarVolumeNode", cine.frames),
                                ("seg.seq.nrrd", "vtkMRMLLabelMapVolumeNode", labels)):
        scene, seq = _read_with_slicer(tmp_path / name)
        assert seq.GetNumberOfDataNodes() == 5
        assert (seq.GetIndexName(), seq.GetIndexUnit()) == ("time", "s")
        np.testing.assert_allclose([float(seq.GetNthIndexValue(i)) for i in range(5)], TIMES, rtol=0, atol=1e-15)
        for i in (0, 3):
            node = seq.GetNthDataNode(i)
            assert node.GetClassName() == cls
            np.testing.assert_allclose(node.GetSpacing(), (0.3, 0.25, 1.0), atol=1e-12)
            np.testing.assert_allclose(_ijk_to_ras(node), rotated_geometry, atol=1e-12)
            np.testing.assert_array_equal(su.arrayFromVolume(node)[0], expected[i])
        scene.Clear(1)


def test_we_read_what_slicer_writes(tmp_path, rotated_geometry):
    frames = np.random.default_rng(8).integers(0, 256, (4, 1, 13, 9)).astype(np.uint8)
    scene = slicer.vtkMRMLScene()
    for cls, name in (("vtkMRMLScalarVolumeNode", "s.seq.nrrd"), ("vtkMRMLLabelMapVolumeNode", "l.seq.nrrd")):
        seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
        seq.SetIndexName("time")
        seq.SetIndexUnit("s")
        seq.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
        template = getattr(slicer, cls)()
        template.SetIJKToRASMatrix(su.vtkMatrixFromArray(rotated_geometry))
        data = frames if cls.startswith("vtkMRMLScalar") else frames // 80
        for i, f in enumerate(data):
            su.updateVolumeFromArray(template, f)
            seq.SetDataNodeAtValue(template, f"{i * 0.02:.3f}")
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
        storage.SetFileName(str(tmp_path / name))
        assert storage.WriteData(seq) == 1
    cine = read_cine(tmp_path / "s.seq.nrrd")
    np.testing.assert_array_equal(cine.frames, frames[:, 0])
    np.testing.assert_allclose(cine.ijk_to_ras, rotated_geometry, atol=1e-12)
    np.testing.assert_allclose(cine.frame_times, [0.0, 0.02, 0.04, 0.06])
    assert cine.metadata["node_class"] == "vtkMRMLScalarVolumeNode"
    labels, geo = read_labels(tmp_path / "l.seq.nrrd")
    np.testing.assert_array_equal(labels, frames[:, 0] // 80)
    assert geo.metadata["node_class"] == "vtkMRMLLabelMapVolumeNode"
    scene.Clear(1)


def test_rgb_volume_sequence_from_slicer_reads_as_luma(tmp_path, rotated_geometry):
    """Slicer writes RGB sequences as 5D NRRD ('vector domain domain domain list') and numbers the
    time axis without the colour axis ('axis 3 index values' although time is axis 4)."""
    from echosam.cine import rgb_to_grey

    rgb = np.random.default_rng(9).integers(0, 256, (3, 1, 10, 12, 3)).astype(np.uint8)
    scene = slicer.vtkMRMLScene()
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    seq.SetIndexName("time")
    seq.SetIndexUnit("s")
    template = slicer.vtkMRMLVectorVolumeNode()
    template.SetIJKToRASMatrix(su.vtkMatrixFromArray(rotated_geometry))
    for i, f in enumerate(rgb):
        su.updateVolumeFromArray(template, f)
        seq.SetDataNodeAtValue(template, f"{i * 0.05:.2f}")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    storage.SetFileName(str(tmp_path / "rgb.seq.nrrd"))
    assert storage.WriteData(seq) == 1
    h = _header(tmp_path / "rgb.seq.nrrd")
    assert h["kinds"] == "vector domain domain domain list" and "axis 3 index values" in h
    cine = read_cine(tmp_path / "rgb.seq.nrrd")
    np.testing.assert_array_equal(cine.frames, rgb_to_grey(rgb[:, 0]))
    np.testing.assert_allclose(cine.frame_times, [0.0, 0.05, 0.1])
    np.testing.assert_allclose(cine.ijk_to_ras, rotated_geometry, atol=1e-12)
    scene.Clear(1)
