"""echosam.mrml against the real MRML classes of slicer-core: cines in, segmentation sequences,
prompts, session state and LV curves out; scene save and reload."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest

# slicer-core (Slicer's real MRML libraries) ships for CPython 3.11 on Linux only; CI asserts it is there
slicer = pytest.importorskip("slicer", reason="slicer-core (MRML libraries) is not installed for this Python")
import slicer.util  # noqa: E402

from echosam import mrml
from echosam.cine import rgb_to_grey
from echosam.errors import CineError, EchoSAMError, PromptError
from echosam.structures import STRUCTURES
import slicer_scene  # noqa: E402
from slicer_scene import HeadlessScene, add_cine_sequence, dicom_us_matrix, headless, matrix_of, scene  # noqa: F401

T, H, W = 6, 40, 52


def grey_frames(t=T):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (t, H, W)).astype(np.uint8)


disk = functools.partial(slicer_scene.disk, h=H, w=W)


def make_labels(t=T):
    labels = np.zeros((t, H, W), np.uint8)
    for i in range(t):
        outer, inner = disk(18, 20 + i, 11), disk(18, 20 + i, 7)
        labels[i][outer] = 2
        labels[i][inner] = 1
        labels[i][disk(33, 38, 4 + i % 2)] = 3
    return labels


# ---- cine in --------------------------------------------------------------------------------
def test_grey_sequence_round_trip_geometry(scene):
    m = dicom_us_matrix()
    frames = grey_frames()
    seq, browser = add_cine_sequence(scene, frames, m)
    for node in (browser, seq, browser.GetProxyNode(seq)):
        cine = mrml.cine_from_sequence(node)
        assert np.array_equal(cine.frames, frames) and cine.frames.dtype == np.uint8
        assert np.allclose(cine.ijk_to_ras, m, atol=1e-9)
        assert np.allclose(cine.frame_times, np.arange(T) * 0.033)
        assert cine.spacing == pytest.approx((0.31, 0.27))
        assert cine.metadata["sequence_id"] == seq.GetID() and cine.metadata["browser_id"] == browser.GetID()
    # a pixel maps to the same RAS point as Slicer's own matrix says
    ras = cine.pixel_to_ras(7, 11)
    assert np.allclose(ras, (matrix_of(browser.GetProxyNode(seq)) @ [7, 11, 0, 1])[:3])


def test_rgb_sequence_and_frame_index_fallback(scene):
    m = dicom_us_matrix(angle_deg=-40)
    rgb = np.random.default_rng(1).integers(0, 255, (4, H, W, 3)).astype(np.uint8)
    seq, browser = add_cine_sequence(scene, rgb, m, index_name="frame", unit="", rgb=True)
    browser.SetPlaybackRateFps(25.0)
    cine = mrml.cine_from_sequence(browser)
    assert np.array_equal(cine.frames, rgb_to_grey(rgb)) and cine.metadata["colour"]
    assert np.allclose(cine.frame_times, np.arange(4) / 25.0) and "playback" in cine.metadata["times_from"]
    assert np.allclose(cine.ijk_to_ras, m)


def test_ms_index_and_single_and_3d_volumes(scene):
    seq, browser = add_cine_sequence(scene, grey_frames(3), np.eye(4), index_name="time", unit="ms", dt=40)
    assert np.allclose(mrml.cine_from_sequence(seq).frame_times, [0, 0.04, 0.08])
    vol = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "still")
    slicer.util.updateVolumeFromArray(vol, grey_frames(1))
    vol.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(dicom_us_matrix()))
    one = mrml.cine_from_volume(vol)
    assert one.n_frames == 1 and np.allclose(one.ijk_to_ras, dicom_us_matrix())
    with pytest.raises(CineError, match="not part of a sequence"):
        mrml.cine_from_sequence(vol)
    stack = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "stack")
    slicer.util.updateVolumeFromArray(stack, grey_frames(5))
    with pytest.raises(CineError, match="3D volume"):
        mrml.cine_from_volume(stack)
    assert mrml.cine_from_volume(stack, slices_as_frames=True).n_frames == 5
    with pytest.raises(CineError, match="No input"):
        mrml.resolve_input(None)


# ---- segmentation sequence out ----------------------------------------------------------------
def test_labels_to_segmentation_sequence_same_browser(scene):
    m = dicom_us_matrix()
    seq, browser = add_cine_sequence(scene, grey_frames(), m)
    cine = mrml.cine_from_sequence(browser)
    labels = make_labels()
    seg_seq, proxy = mrml.write_segmentation_sequence(labels, cine, browser, ["lv", "myo", "la"])
    assert browser.IsSynchronizedSequenceNode(seg_seq, False) and browser.GetSaveChanges(seg_seq)
    assert seg_seq.GetNumberOfDataNodes() == T                   # pre-filled: one item per frame
    assert [seg_seq.GetNthIndexValue(i) for i in range(T)] == [seq.GetNthIndexValue(i) for i in range(T)]
    for i in range(T):
        seg = seg_seq.GetNthDataNode(i).GetSegmentation()
        assert list(seg.GetSegmentIDs()) == ["LV_endo", "LV_myo", "LA"]
        for s in STRUCTURES.values():
            segment = seg.GetSegment(s.segment_id)
            assert segment.GetName() == s.name and np.allclose(segment.GetColor(), s.color)
            assert f"SCT^{s.type[1]}^{s.type[2]}" in segment.GetTerminology()
    for i in (3, 0, T - 1):
        browser.SetSelectedItemNumber(i)
        proxy = browser.GetProxyNode(seg_seq)
        for s in STRUCTURES.values():
            back = slicer.util.arrayFromSegmentBinaryLabelmap(proxy, s.segment_id, browser.GetProxyNode(seq))
            assert np.array_equal(back[0] > 0, labels[i] == s.label), (i, s.key)
    assert np.array_equal(mrml.read_labels(browser, seg_seq, cine=cine), labels)


def test_edit_in_proxy_is_read_back_as_correction_and_reuse_does_not_duplicate(scene):
    seq, browser = add_cine_sequence(scene, grey_frames(), dicom_us_matrix())
    cine = mrml.cine_from_sequence(browser)
    labels = make_labels()
    seg_seq, proxy = mrml.write_segmentation_sequence(labels, cine, browser, ["lv", "myo", "la"])
    n_nodes = scene.GetNumberOfNodes()
    k = 4
    browser.SetSelectedItemNumber(k)
    edited = disk(20, 30, 9)
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited[None].astype(np.uint8), browser.GetProxyNode(seg_seq),
                                                     "LV_endo", browser.GetProxyNode(seq))
    assert np.array_equal(mrml.read_segment_mask(browser, seg_seq, k, "lv", cine), edited)   # current frame: proxy
    browser.SetSelectedItemNumber(1)
    assert np.array_equal(mrml.read_segment_mask(browser, seg_seq, k, "lv", cine), edited)   # saved into the item
    assert np.array_equal(mrml.read_segment_mask(browser, seg_seq, 1, "lv", cine), labels[1] == 1)
    # second write reuses the same sequence and proxy: no new nodes
    labels2 = labels.copy()
    labels2[2] = 0
    seg_seq2, proxy2 = mrml.write_segmentation_sequence(labels2, cine, browser, ["lv", "myo", "la"], frames=[2])
    assert seg_seq2 is seg_seq and proxy2 is browser.GetProxyNode(seg_seq) and scene.GetNumberOfNodes() == n_nodes
    assert not mrml.read_segment_mask(browser, seg_seq, 2, "lv", cine).any()
    assert np.array_equal(mrml.read_segment_mask(browser, seg_seq, k, "lv", cine), edited)   # untouched frame kept
    with pytest.raises(PromptError):
        mrml.write_segmentation_sequence(labels[:3], cine, browser, ["lv"])
    with pytest.raises(PromptError, match="outside"):
        mrml.read_segment_mask(browser, seg_seq, T + 3, "lv", cine)


# ---- prompts from markups ---------------------------------------------------------------------
def test_markups_points_and_roi_to_pixel_prompts(scene):
    m = dicom_us_matrix()
    seq, browser = add_cine_sequence(scene, grey_frames(), m)
    cine = mrml.cine_from_sequence(browser)
    include = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
    exclude = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "exclude")
    px = [(10.0, 12.0), (30.5, 20.0)]
    for x, y in px:
        include.AddControlPoint(list(cine.pixel_to_ras(x, y)))
    exclude.AddControlPoint(list(cine.pixel_to_ras(45, 35)))
    include.SetNthControlPointDescription(1, "exclude")          # per-point label also works
    prompts = mrml.prompts_from_markups(include, None, cine, 2, exclude=exclude)
    assert [p["label"] for p in prompts] == [1, 0, 0] and all(p["frame"] == 2 for p in prompts)
    assert np.allclose([p["xy"] for p in prompts], [[10, 12], [30.5, 20], [45, 35]], atol=1e-6)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    centre = cine.pixel_to_ras(25, 18)
    roi.SetCenterWorld(list(centre))
    roi.SetSizeWorld([6.0, 6.0, 2.0])
    box = mrml.prompts_from_markups([], roi, cine, 0)[0]["box"]
    # the axis-aligned ROI projected on the rotated frame: a box around pixel (25, 18) within the image
    assert box[0] < 25 < box[2] and box[1] < 18 < box[3] and box[0] >= 0 and box[3] <= H - 1
    off = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "off")
    off.AddControlPoint(list(cine.pixel_to_ras(-30, 10)))
    with pytest.raises(PromptError, match="outside the image"):
        mrml.prompts_from_markups(off, None, cine, 0)
    far = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "far")
    far.AddControlPoint(list(cine.pixel_to_ras(5, 5) + np.array([0, 0, 10.0])))
    with pytest.raises(PromptError, match="off the image plane"):
        mrml.prompts_from_markups(far, None, cine, 0)


# ---- state, curves, save and reload -----------------------------------------------------------

def test_state_and_labels_survive_mrb_save_and_reload(headless, tmp_path):
    scene = headless.scene
    seq, browser = add_cine_sequence(scene, grey_frames(), dicom_us_matrix())
    cine = mrml.cine_from_sequence(browser)
    labels = make_labels()
    seg_seq, _ = mrml.write_segmentation_sequence(labels, cine, browser, ["lv", "myo", "la"])
    prompts = {"lv": {"0": {"points": [[10, 12]], "labels": [1]}}}
    mrml.save_session_state(seq, {"lv": [0, 3]}, ed_frames=[0], es_frames=[3], prompts=prompts,
                            written={0: {"lv": "d0"}, 3: {"lv": "d3"}})
    with pytest.raises(EchoSAMError, match="proxy"):
        mrml.save_session_state(browser.GetProxyNode(seq), {}, [], [])
    curve = [float((labels[i] == 1).sum() * cine.pixel_area_mm2) for i in range(T)]
    nodes = mrml.write_lv_curve(scene, cine.frame_times, curve, ed_frames=[0], es_frames=[3], ef=42.5, anchor=seq)
    again = mrml.write_lv_curve(scene, cine.frame_times, curve, ed_frames=[0], es_frames=[3], ef=42.5, anchor=seq)
    assert all(nodes[k] is again[k] for k in nodes) and nodes["chart"].GetNumberOfPlotSeriesNodes() == 1
    table = nodes["table"].GetTable()
    assert table.GetNumberOfRows() == T and np.allclose([table.GetValue(i, 2).ToDouble() for i in range(T)], curve)
    assert nodes["series"].GetTableNode() is nodes["table"]
    assert nodes["ef_table"].GetTable().GetValueByName(4, "Value").ToString() == "42.5"
    browser.SetSelectedItemNumber(3)
    browser.SetSelectedItemNumber(0)

    path = tmp_path / "echo.mrb"
    assert scene.WriteToMRB(str(path))
    headless.close()
    fresh = HeadlessScene(tmp_path / "cache2")
    try:
        assert fresh.scene.ReadFromMRB(str(path))
        b2 = fresh.scene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode")
        seq2 = b2.GetMasterSequenceNode()
        seg2 = mrml.find_segmentation_sequence(b2)
        assert seg2 is not None and b2.GetSaveChanges(seg2)
        cine2 = mrml.cine_from_sequence(b2)
        assert np.array_equal(cine2.frames, cine.frames) and np.allclose(cine2.ijk_to_ras, cine.ijk_to_ras)
        assert np.array_equal(mrml.read_labels(b2, seg2, cine=cine2), labels)
        state = mrml.load_session_state(seq2)
        assert state == {"locked": {"lv": [0, 3]}, "ed_frames": [0], "es_frames": [3], "prompts": prompts,
                         "written": {0: {"lv": "d0"}, 3: {"lv": "d3"}}}
        assert seq2.GetNodeReference(mrml.REF_CURVE_CHART) is not None
        # re-writing into the reloaded scene reuses the reloaded nodes
        n = fresh.scene.GetNumberOfNodes()
        s3, _ = mrml.write_segmentation_sequence(labels, cine2, b2, ["lv", "myo", "la"], frames=[1])
        assert s3 is seg2 and fresh.scene.GetNumberOfNodes() == n
    finally:
        fresh.close()


def test_update_session_state_keeps_other_fields_and_panel_plot_view(scene):
    seq, browser = add_cine_sequence(scene, grey_frames(2), np.eye(4))
    prompts = {"format": "echosam-prompts", "prompts": []}
    mrml.save_session_state(seq, {"lv": [1]}, [0], [1], prompts, written={1: {"lv": "abc"}})
    mrml.save_session_state(seq, {"lv": [1]}, [0], [1], prompts)          # written=None keeps the record
    state = mrml.update_session_state(seq, locked={"lv": [], "myo": [0]})
    assert state == mrml.load_session_state(seq) == {"locked": {"lv": [], "myo": [0]}, "ed_frames": [0],
                                                     "es_frames": [1], "prompts": prompts, "written": {1: {"lv": "abc"}}}
    with pytest.raises(EchoSAMError, match="Unknown session state"):
        mrml.update_session_state(seq, lockd={})
    nodes = mrml.write_lv_curve(scene, [0.0, 0.1], [50.0, 30.0], anchor=seq)
    view = mrml.panel_plot_view(scene, nodes["chart"])
    assert view.IsA("vtkMRMLPlotViewNode") and view.GetPlotChartNodeID() == nodes["chart"].GetID()
    assert mrml.panel_plot_view(scene, nodes["chart"]) is view and scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode") == 1
    assert view.GetLayoutName() == "EchoSAMPanel"


def test_damaged_state_attribute_is_reported(scene):
    seq, browser = add_cine_sequence(scene, grey_frames(2), np.eye(4))
    seq.SetAttribute("EchoSAM.LockedFrames", "{not json")
    with pytest.raises(EchoSAMError, match="damaged"):
        mrml.load_session_state(seq)
    assert mrml.load_session_state(browser)["locked"] == {}


# ---- end to end with a real Session and a tiny MemSAM (when session.py exists) ------------------
def test_session_round_trip_through_mrml_keeps_locked_frame(scene):
    import torch

    from echosam.checkpoints import LoadedModel
    from echosam.models.registry import build_model, preset_config
    from echosam.session import Session

    torch.manual_seed(0)
    seq, browser = add_cine_sequence(scene, grey_frames(), dicom_us_matrix())
    cine = mrml.cine_from_sequence(browser)
    config = preset_config("memsam", "tiny")
    loaded = LoadedModel(build_model("memsam", config).eval(), "memsam", config, meta={"classes": ["lv"]})
    s = Session(cine, loaded, structures=("lv",))
    s.set_mask(0, "lv", make_labels()[0] == 1)
    labels = s.propagate()
    seg_seq, _ = mrml.write_segmentation_sequence(labels, cine, browser, ["lv"])
    k = 3
    browser.SetSelectedItemNumber(k)
    edited = disk(20, 28, 8)
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited[None].astype(np.uint8), browser.GetProxyNode(seg_seq),
                                                     "LV_endo", browser.GetProxyNode(seq))
    correction = mrml.read_segment_mask(browser, seg_seq, k, "lv", cine)
    s.set_mask(k, "lv", correction)
    labels2 = s.propagate()
    assert np.array_equal(labels2[k] == 1, edited)                  # locked frame kept bit for bit
    assert np.array_equal(labels2[0] == 1, make_labels()[0] == 1)
    mrml.write_segmentation_sequence(labels2, cine, browser, ["lv"])
    mrml.save_session_state(seq, s.locked_frames, prompts=s.prompts_to_dict())
    assert mrml.load_session_state(seq)["locked"]["lv"] == [0, k]
    assert json.loads(seq.GetAttribute("EchoSAM.Prompts")) == json.loads(json.dumps(s.prompts_to_dict()))
