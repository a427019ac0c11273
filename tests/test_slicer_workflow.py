"""Issue 15: the Slicer correction loop a user can trust, headless on real MRML nodes (slicer-core),
a real worker thread and a real tiny MemSAM checkpoint. Each test names the defect it proves fixed."""
from __future__ import annotations

import functools
import json
import threading
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (MRML libraries) is not installed for this Python")
import slicer.util  # noqa: E402

from echosam import mrml  # noqa: E402
from echosam import worker as wk  # noqa: E402
from echosam.errors import EchoSAMError, PromptError  # noqa: E402
from echosam.slicer import calibration, display, prompts as pr  # noqa: E402
from echosam.slicer.controller import Controller  # noqa: E402
import slicer_scene  # noqa: E402
from slicer_scene import HeadlessScene, add_cine_sequence, dicom_us_matrix, headless, scene  # noqa: E402,F401

T, H, W = 10, 40, 48
disk = functools.partial(slicer_scene.disk, h=H, w=W)


def cine_frames(rgb: bool = False):
    """A bright beating disk (LV) in a darker ring on noise (grey, or the same in RGB)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 40, (T, H, W)).astype(np.uint8)
    for t in range(T):
        r = 9 + 3 * np.cos(2 * np.pi * t / T)
        frames[t][disk(20, 22, r + 4)] = 120
        frames[t][disk(20, 22, r)] = 220
    return np.repeat(frames[..., None], 3, axis=-1) if rgb else frames


def run_to_end(controller, timeout=300.0):
    """Drive the controller exactly as the panel's QTimer does: tick until it says stop."""
    actions, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, keep = controller.tick()
        actions += got
        if not keep:
            return actions
        time.sleep(0.01)
    raise AssertionError(f"the run did not end; got {[a.kind for a in actions]}")


def final(actions):
    ends = [a for a in actions if a.kind in ("result", "error", "cancelled")]
    assert ends, f"the panel stopped polling with no final action: {[a.kind for a in actions]}"
    return ends[-1]


def ok(actions):
    a = final(actions)
    assert a.kind == "result", a.text + a.details
    return a


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    import torch

    from echosam.checkpoints import save_checkpoint
    from echosam.models.registry import build_model, preset_config
    torch.manual_seed(0)
    config = preset_config("memsam", "tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny-memsam.safetensors"
    return str(save_checkpoint(build_model("memsam", config).eval(), "memsam", config, path, classes=["lv", "myo", "la"]))


@pytest.fixture
def controller():
    c = Controller()
    yield c
    c.shutdown()


def edit(browser, seg_seq, seq, frame, mask):
    """What Segment Editor does: the user shows ``frame`` and paints the LV segment of the proxy."""
    browser.SetSelectedItemNumber(frame)
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask[None].astype(np.uint8), browser.GetProxyNode(seg_seq),
                                                     "LV_endo", browser.GetProxyNode(seq))


def place_point(scene, browser, cine, frame, name="LV include", node=None, controller=None, xy=(22, 20)):
    node = node or scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    if controller is not None:
        controller.watch_markups(browser, [node])
    browser.SetSelectedItemNumber(frame)
    node.AddControlPoint(list(cine.pixel_to_ras(*xy)))
    return node


def lv(browser, seg_seq, frame, cine):
    return mrml.read_segment_mask(browser, seg_seq, frame, "lv", cine)


# ---- defect 1: edits on other frames are never overwritten ------------------------------------------
def test_edits_on_frames_5_and_9_both_kept_when_propagating_from_9(scene, spec, controller):
    seq, browser = add_cine_sequence(scene, cine_frames(), dicom_us_matrix())
    cine = mrml.cine_from_sequence(browser)
    points = place_point(scene, browser, cine, 0, controller=controller)
    controller.submit_segmentation(browser, spec, "cpu", ["lv"], include=points)
    ok(run_to_end(controller))
    seg_seq = mrml.find_segmentation_sequence(browser)
    first = mrml.read_labels(browser, seg_seq, ["lv"], cine)
    e5, e9 = disk(18, 20, 6), disk(24, 27, 5)
    edit(browser, seg_seq, seq, 5, e5)
    edit(browser, seg_seq, seq, 9, e9)                    # frame 9 shown: frame 5 only in the sequence item
    assert controller.edited_frames(browser) == {5: ["lv"], 9: ["lv"]}
    run = controller.submit_segmentation(browser, spec, "cpu", ["lv"], frame=9, from_edit=True)
    assert run.data["corrected"] == [5, 9]
    ok(run_to_end(controller))
    assert np.array_equal(lv(browser, seg_seq, 5, cine), e5) and np.array_equal(lv(browser, seg_seq, 9, cine), e9)
    assert mrml.load_session_state(seq)["locked"]["lv"] == [5, 9]
    assert controller.edited_frames(browser) == {}
    after = mrml.read_labels(browser, seg_seq, ["lv"], cine)
    assert not np.array_equal(after[[5, 9]], first[[5, 9]])


def test_an_edit_made_while_a_run_works_is_not_overwritten(scene, spec, controller):
    seq, browser = add_cine_sequence(scene, cine_frames(), dicom_us_matrix())
    cine = mrml.cine_from_sequence(browser)
    points = place_point(scene, browser, cine, 0, controller=controller)
    controller.submit_segmentation(browser, spec, "cpu", ["lv"], include=points)
    ok(run_to_end(controller))
    seg_seq = mrml.find_segmentation_sequence(browser)
    gate = threading.Event()
    controller.worker.submit("block", lambda s, p, c: gate.wait(30))   # the worker is busy with something else
    controller.submit_segmentation(browser, spec, "cpu", ["lv"], frame=0, from_edit=True)
    late = disk(22, 20, 4)
    edit(browser, seg_seq, seq, 3, late)                   # edited after the run was submitted
    gate.set()
    done = ok(run_to_end(controller))
    assert done.value["kept_edits"] == [3] and "Frames 3 were edited while this ran" in done.text
    assert np.array_equal(lv(browser, seg_seq, 3, cine), late)
    assert controller.edited_frames(browser) == {3: ["lv"]}         # still waiting to be propagated


# ---- defect 2: a prompt belongs to the frame it was placed on ----------------------------------------
def test_a_point_placed_on_frame_0_stays_a_frame_0_prompt_after_scrubbing(scene, spec, controller):
    seq, browser = add_cine_sequence(scene, cine_frames(), dicom_us_matrix())
    cine = mrml.cine_from_sequence(browser)
    points = place_point(scene, browser, cine, 0, controller=controller)
    assert mrml.point_frames(points) == {points.GetNthControlPointID(0): 0}
    controller.submit_segmentation(browser, spec, "cpu", ["lv"], frame=0, include=points)
    ok(run_to_end(controller))
    browser.SetSelectedItemNumber(6)
    controller.submit_segmentation(browser, spec, "cpu", ["lv"], frame=6, include=points)
    ok(run_to_end(controller))
    stored = mrml.load_session_state(seq)["prompts"]
    assert pr.prompt_frames(stored) == {"lv": [0]}
    # a second point placed while frame 6 is shown is a frame-6 prompt; the first stays on 0
    place_point(scene, browser, cine, 6, node=points, xy=(23, 21))
    controller.submit_segmentation(browser, spec, "cpu", ["lv"], frame=6, include=points)
    ok(run_to_end(controller))
    assert pr.prompt_frames(mrml.load_session_state(seq)["prompts"]) == {"lv": [0, 6]}
    info = controller.frames_info(browser)
    assert display.frames_text(**info) == "Frame 6 / 9 | prompts: LV 0, 6 | locked: none"


# ---- defect 3: the worker hand-off is race-free ----------------------------------------------------
def test_the_timer_never_stops_with_a_result_unread_forced_interleaving():
    class Gated(wk.Worker):
        """Pauses the worker just before it queues a final message, so the GUI can poll in between."""

        def __init__(self):
            self.about_to_put, self.release = threading.Event(), threading.Event()
            super().__init__()
            real_put = self._messages.put

            def put(msg, *a, **k):
                if msg.kind == wk.RESULT:
                    self.about_to_put.set()
                    assert self.release.wait(10)
                real_put(msg, *a, **k)
            self._messages.put = put

    c = Controller(worker_factory=Gated)
    try:
        run = c._submit(__import__("echosam.slicer.runs", fromlist=["Run"]).Run("download", final="download"),
                        [("download", lambda s, p, cancel: "weights.pth", {})])
        assert c.worker.about_to_put.wait(10)
        actions, keep = c.tick()                 # the timer polls: nothing yet...
        assert actions == [] and keep
        c.worker.release.set()                   # ...the worker queues the result and finishes the job
        assert c.worker.wait_idle(10)
        time.sleep(0.05)
        assert c.busy                            # not idle until the result has been read
        actions, keep = c.tick()
        assert [a.kind for a in actions] == ["result"] and actions[0].run is run and not keep
    finally:
        c.shutdown()


# ---- defect 4: the Segment Editor round trip ----------------------------------------------------------
def test_segment_editor_gets_the_proxy_volume_as_source_at_the_current_frame(scene, spec, controller):
    seq, browser = add_cine_sequence(scene, cine_frames(rgb=True), dicom_us_matrix(), rgb=True)
    cine = mrml.cine_from_sequence(browser)
    points = place_point(scene, browser, cine, 0, controller=controller)
    controller.submit_segmentation(browser, spec, "cpu", ["lv"], include=points)
    ok(run_to_end(controller))
    seg_seq = mrml.find_segmentation_sequence(browser)
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    proxy_seg, proxy_vol = browser.GetProxyNode(seg_seq), browser.GetProxyNode(seq)
    assert proxy_seg.GetNodeReference(role) is proxy_vol and proxy_vol.GetScene() is scene
    nodes = controller.edit_frame(browser, 4)
    assert browser.GetSelectedItemNumber() == 4 and nodes["frame"] == 4
    editor = nodes["editor_node"]
    assert editor.GetSegmentationNode() is proxy_seg and editor.GetSourceVolumeNode() is proxy_vol
    assert editor.GetSelectedSegmentID() == "LV_endo"
    assert proxy_seg.GetNodeReference(role) is proxy_vol      # still set after the frame change
    e4 = disk(19, 21, 6)
    slicer.util.updateSegmentBinaryLabelmapFromArray(e4[None].astype(np.uint8), editor.GetSegmentationNode(),
                                                     "LV_endo", editor.GetSourceVolumeNode())
    assert browser.GetSelectedItemNumber() == 4              # "returning to the panel keeps the frame"
    run = controller.submit_segmentation(browser, spec, "cpu", ["lv"], frame=4, from_edit=True)
    assert run.data["corrected"] == [4]
    ok(run_to_end(controller))
    assert np.array_equal(lv(browser, seg_seq, 4, cine), e4)


# ---- defect 7: undo is real and survives a scene save and reload ----------------------------------
def test_undo_after_a_scene_save_and_reload(headless, tmp_path, spec):
    scene = headless.scene
    seq, browser = add_cine_sequence(scene, cine_frames(), dicom_us_matrix())
    cine = mrml.cine_from_sequence(browser)
    c = Controller()
    try:
        points = place_point(scene, browser, cine, 0, controller=c)
        c.submit_segmentation(browser, spec, "cpu", ["lv"], include=points)
        ok(run_to_end(c))
        seg_seq = mrml.find_segmentation_sequence(browser)
        before = mrml.read_labels(browser, seg_seq, ["lv"], cine)
        edit(browser, seg_seq, seq, 2, disk(20, 22, 5))
        c.submit_segmentation(browser, spec, "cpu", ["lv"], frame=2, from_edit=True)
        ok(run_to_end(c))
        assert mrml.load_session_state(seq)["locked"]["lv"] == [2]
    finally:
        c.shutdown()
    path = str(tmp_path / "story.mrb")
    assert scene.WriteToMRB(path)
    scene.Clear(0)
    assert scene.ReadFromMRB(path)
    browser = scene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode")
    seq = browser.GetMasterSequenceNode()
    seg_seq = mrml.find_segmentation_sequence(browser)
    c = Controller()
    try:
        assert c.can_undo(browser)
        summary = c.undo(browser)                      # no model, no session: the saved stack
        assert summary["undone"] == "Propagate" and mrml.load_session_state(seq)["locked"]["lv"] == []
        now = mrml.read_labels(browser, seg_seq, ["lv"], cine)
        assert np.array_equal(np.delete(now, 2, 0), np.delete(before, 2, 0))
        assert np.array_equal(now[2] == 1, disk(20, 22, 5))                  # the user's edit is back, unpropagated
        assert c.edited_frames(browser) == {2: ["lv"]}
        with pytest.raises(EchoSAMError, match="Frames 2 hold edits not yet propagated"):
            c.undo(browser)                            # undoing the Segment would overwrite that edit: refused
        assert np.array_equal(mrml.read_labels(browser, seg_seq, ["lv"], cine)[2] == 1, disk(20, 22, 5))
    finally:
        c.shutdown()


# ---- defect 8: uncalibrated spacing is flagged and can be calibrated --------------------------------
def test_an_uncalibrated_cine_is_flagged_and_calibration_rescales_the_volumes(scene, spec, controller):
    m = np.diag([-1.0, -1.0, 1.0, 1.0])                   # 1 mm x 1 mm: Slicer's uncalibrated default
    seq, browser = add_cine_sequence(scene, cine_frames(), m)
    cine = mrml.cine_from_sequence(browser)
    assert not controller.spacing_of(browser).calibrated
    points = place_point(scene, browser, cine, 0, controller=controller)
    controller.submit_segmentation(browser, spec, "cpu", ["lv"], include=points)
    done = ok(run_to_end(controller))
    summary = done.value
    assert summary["calibrated"] is False and "uncalibrated" in done.text.lower()
    rows = dict(display.results_rows(summary))
    assert "EDV (ml, uncalibrated)" in rows and "ESV (ml, uncalibrated)" in rows
    ef_table = seq.GetNodeReference(mrml.REF_EF_TABLE).GetTable()
    values = [ef_table.GetValue(r, 1).ToString() for r in range(ef_table.GetNumberOfRows())]
    assert any("UNCALIBRATED" in v for v in values)
    calibrated = controller.calibrate(browser, spacing=(0.5, 0.5))
    assert calibrated["calibrated"] and calibrated["spacing_mm"] == [0.5, 0.5]
    # volumes scale as s^3 (up to the summary's rounding to 0.001 ml: the random-weight LV is small)
    assert calibrated["edv_ml"] == pytest.approx(summary["edv_ml"] * 0.125, rel=1e-3, abs=5e-4)
    assert "EDV (ml)" in dict(display.results_rows(calibrated))
    line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "10 mm")
    line.AddControlPoint(list(cine.pixel_to_ras(0, 0)))
    line.AddControlPoint(list(cine.pixel_to_ras(40, 0)))
    assert controller.calibrate(browser, line=line, known_mm=10.0)["spacing_mm"] == pytest.approx([0.25, 0.25])
    assert calibration.spacing_status((0.3, 0.25)).calibrated
    with pytest.raises(EchoSAMError, match="not plausible"):
        calibration.typed_spacing(0, 1)


# ---- defect 9: smaller panel defects ------------------------------------------------------------------
def test_segment_with_no_prompt_fails_before_any_model_loads(scene, spec):
    seq, browser = add_cine_sequence(scene, cine_frames(), dicom_us_matrix())
    c = Controller()
    with pytest.raises(PromptError, match="no prompt yet"):
        c.submit_segmentation(browser, spec, "cpu", ["lv"])
    assert c._worker is None                                # nothing was queued, no model loaded
    assert display.DEVICES == ("auto", "cpu", "cuda", "mps")
    assert pr.reconcile_prompt_structure("MYO", ["LV"]) == "LV" and pr.reconcile_prompt_structure("LA", ["LV", "LA"]) == "LA"
    states = display.button_states(True, True, busy=False, prompted=True, weights_present=True, can_download=False,
                                   has_result=False, can_undo=True)
    assert states["undoButton"] and not states["editFrameButton"] and not states["propagateButton"]


# ---- defect 10: one source for each piece of state -------------------------------------------------
def test_a_failed_submit_on_browser_b_does_not_leak_into_a_run_on_browser_a(scene, spec, controller):
    seq_a, a = add_cine_sequence(scene, cine_frames(), dicom_us_matrix(), name="A")
    frames_b = np.random.default_rng(1).integers(0, 255, (5, 32, 32)).astype(np.uint8)
    seq_b, b = add_cine_sequence(scene, frames_b, np.eye(4) * 0.3 + np.diag([0, 0, 0.7, 0.7]), name="B")
    cine_a = mrml.cine_from_sequence(a)
    points = place_point(scene, a, cine_a, 0, controller=controller)
    with pytest.raises(PromptError):
        controller.submit_segmentation(b, spec, "cpu", ["lv"])             # refused: no prompt on B
    assert not hasattr(controller, "cine") and not hasattr(controller, "session_key")
    run = controller.submit_segmentation(a, spec, "cpu", ["lv"], include=points)
    assert run.data["cine"].shape == (T, H, W)
    ok(run_to_end(controller))
    assert mrml.find_segmentation_sequence(a).GetNumberOfDataNodes() == T and mrml.find_segmentation_sequence(b) is None
    # the scene's prompts are the source: the session is rebuilt from them, locks derive from them
    stored = mrml.load_session_state(seq_a)
    assert stored["locked"] == pr.locked_frames(stored["prompts"], ["lv", "myo", "la"])
    assert controller.worker.state["session"].prompts_to_dict()["prompts"] == stored["prompts"]["prompts"]
