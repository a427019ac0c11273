"""The user's story end to end on real MRML (issue 15): load an RGB DICOM-style cine sequence,
Segment from a point, open frame 0 for editing, change the mask, propagate, save the scene as .mrb,
reload it, edit frame 20, propagate, undo. Every step asserts the labels, the locks and which
frames changed."""
from __future__ import annotations

import functools
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (MRML libraries) is not installed for this Python")
import slicer.util  # noqa: E402

from echosam import mrml  # noqa: E402
from echosam.slicer.controller import Controller  # noqa: E402
import slicer_scene  # noqa: E402
from slicer_scene import add_cine_sequence, dicom_us_matrix, headless  # noqa: E402,F401

T, H, W = 24, 40, 48
disk = functools.partial(slicer_scene.disk, h=H, w=W)


def rgb_cine():
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 40, (T, H, W)).astype(np.uint8)
    for t in range(T):
        r = 9 + 3 * np.cos(2 * np.pi * t / 12)
        grey[t][disk(20, 22, r + 4)] = 120
        grey[t][disk(20, 22, r)] = 220
    return np.stack([grey, grey, grey], axis=-1)


def run_to_end(c, timeout=300.0):
    actions, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, keep = c.tick()
        actions += got
        if not keep:
            ends = [a for a in actions if a.kind in ("result", "error", "cancelled")]
            assert ends and ends[-1].kind == "result", [a.text + a.details for a in ends]
            return ends[-1]
        time.sleep(0.01)
    raise AssertionError("the run did not end")


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    import torch

    from echosam.checkpoints import save_checkpoint
    from echosam.models.registry import build_model, preset_config
    torch.manual_seed(0)
    config = preset_config("memsam", "tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny-memsam.safetensors"
    return str(save_checkpoint(build_model("memsam", config).eval(), "memsam", config, path, classes=["lv"]))


def paint(c, browser, frame, mask):
    """ "Edit this frame", then paint the LV in the Segment Editor's segmentation (what the effect does)."""
    nodes = c.edit_frame(browser, frame)
    assert nodes["source_volume"] is browser.GetProxyNode(browser.GetMasterSequenceNode())
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask[None].astype(np.uint8), nodes["segmentation"],
                                                     nodes["editor_node"].GetSelectedSegmentID(), nodes["source_volume"])


def test_the_users_story(headless, tmp_path, spec):
    scene = headless.scene
    seq, browser = add_cine_sequence(scene, rgb_cine(), dicom_us_matrix(), rgb=True, name="US cine")
    assert seq.GetNthDataNode(0).IsA("vtkMRMLVectorVolumeNode")
    cine = mrml.cine_from_sequence(browser)
    c = Controller()
    try:
        # Segment from one point on frame 0
        points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "LV include")
        c.watch_markups(browser, [points])
        browser.SetSelectedItemNumber(0)
        points.AddControlPoint(list(cine.pixel_to_ras(22, 20)))
        c.submit_segmentation(browser, spec, "cpu", ["lv"], include=points)
        run_to_end(c)
        seg_seq = mrml.find_segmentation_sequence(browser)
        first = mrml.read_labels(browser, seg_seq, ["lv"], cine)
        assert first.shape == (T, H, W) and first.any() and set(np.unique(first)) <= {0, 1}
        assert mrml.load_session_state(seq)["locked"]["lv"] == [] and c.edited_frames(browser) == {}

        # open frame 0 for editing, change the mask, propagate
        e0 = disk(21, 22, 7)
        paint(c, browser, 0, e0)
        assert c.edited_frames(browser) == {0: ["lv"]}
        run = c.submit_segmentation(browser, spec, "cpu", ["lv"], frame=0, from_edit=True)
        assert run.data["corrected"] == [0]
        run_to_end(c)
        second = mrml.read_labels(browser, seg_seq, ["lv"], cine)
        assert np.array_equal(second[0] == 1, e0) and mrml.load_session_state(seq)["locked"]["lv"] == [0]
        assert c.edited_frames(browser) == {}
        changed = sorted(int(t) for t in np.flatnonzero((second != first).reshape(T, -1).any(1)))
        assert 0 in changed
    finally:
        c.shutdown()

    # save the scene as .mrb and reload it
    path = str(tmp_path / "story.mrb")
    assert scene.WriteToMRB(path)
    scene.Clear(0)
    assert scene.ReadFromMRB(path)
    browser = scene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode")
    seq = browser.GetMasterSequenceNode()
    seg_seq = mrml.find_segmentation_sequence(browser)
    assert np.array_equal(mrml.read_labels(browser, seg_seq, ["lv"], cine), second)
    assert mrml.load_session_state(seq)["locked"]["lv"] == [0]

    c = Controller()                       # a new Slicer session: nothing in memory
    try:
        assert c.edited_frames(browser) == {}
        e20 = disk(19, 24, 6)
        paint(c, browser, 20, e20)
        assert c.edited_frames(browser) == {20: ["lv"]}
        run = c.submit_segmentation(browser, spec, "cpu", ["lv"], frame=20, from_edit=True)
        assert run.data["corrected"] == [20]
        run_to_end(c)
        third = mrml.read_labels(browser, seg_seq, ["lv"], cine)
        assert np.array_equal(third[0] == 1, e0) and np.array_equal(third[20] == 1, e20)
        assert mrml.load_session_state(seq)["locked"]["lv"] == [0, 20] and c.edited_frames(browser) == {}

        # undo: back to just before that Propagate (the frame-20 edit shows again, unpropagated)
        summary = c.undo(browser)
        assert summary["undone"] == "Propagate"
        undone = mrml.read_labels(browser, seg_seq, ["lv"], cine)
        assert np.array_equal(np.delete(undone, 20, 0), np.delete(second, 20, 0))
        assert np.array_equal(undone[20] == 1, e20)
        assert mrml.load_session_state(seq)["locked"]["lv"] == [0] and c.edited_frames(browser) == {20: ["lv"]}
    finally:
        c.shutdown()
