"""The Slicer panel's session runs on the ultrasound region, as `echosam segment` does: a scanner screen
capture in a real MRML sequence, a real worker thread, a tiny prompt-zoomed MemSAM. Labels land on the
original pixels, never outside the fan (nor outside the zoom), and a prompt off the fan is refused."""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (MRML libraries) is not installed for this Python")

from echosam import mrml, zoom  # noqa: E402
from echosam.errors import PromptError  # noqa: E402
from echosam.slicer.controller import Controller  # noqa: E402
from screen_fixtures import make_screen_capture  # noqa: E402
from slicer_scene import HeadlessScene, add_cine_sequence, dicom_us_matrix, headless, scene  # noqa: E402,F401
from test_slicer_workflow import ok, run_to_end  # noqa: E402


@pytest.fixture(scope="module")
def zoomed_spec(tmp_path_factory):
    import torch

    from echosam.checkpoints import save_checkpoint
    from echosam.models.registry import build_model, preset_config
    torch.manual_seed(0)
    cfg = preset_config("memsam", "tiny")
    cfg.prompt_zoom = 0.25
    path = tmp_path_factory.mktemp("ckpt") / "tiny-zoomed.safetensors"
    return str(save_checkpoint(build_model("memsam", cfg).eval(), "memsam", cfg, path, classes=["lv", "myo", "la"]))


def lv_roi(scene, cine, lv: np.ndarray):
    """An ROI markup on the tight box of ``lv`` (frame pixels), as a user draws it round the LV."""
    yx = np.argwhere(lv)
    (y0, x0), (y1, x1) = yx.min(0), yx.max(0)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "LV box")
    roi.SetCenterWorld(list(cine.pixel_to_ras((x0 + x1) / 2, (y0 + y1) / 2)))
    roi.SetSizeWorld([(x1 - x0) * cine.spacing[1], (y1 - y0) * cine.spacing[0], 2.0])
    return roi


def capture_in_scene(scene):
    """A cartoon screen capture (off-centre fan) as a DICOM-like RGB sequence, and an ROI round its LV on frame 0."""
    cap = make_screen_capture(n_frames=6, seed=4, apex=(90, 20))
    seq, browser = add_cine_sequence(scene, cap.frames, dicom_us_matrix(angle_deg=0.0), rgb=True)
    cine = mrml.cine_from_sequence(browser)
    return cap, seq, browser, cine, lv_roi(scene, cine, cap.labels[0] == 1)


def test_panel_session_crops_to_the_fan_and_zooms_to_the_box(scene, zoomed_spec):
    cap, seq, browser, cine, roi = capture_in_scene(scene)
    c = Controller()
    try:
        c.submit_segmentation(browser, zoomed_spec, "cpu", ["lv"], frame=0, roi=roi)
        ok(run_to_end(c))
        state = c.worker.state
        region, session = state["region"], state["session"]
        assert region.zoom is not None and region.source == "detected"
        assert session.cine.shape[1:] == region.crop_shape and region.crop_shape[1] < cap.fan.shape[1] // 2
        box = mrml.load_session_state(seq)["prompts"]["prompts"][0]["box"]
        assert list(region.zoom["box"]) == list(zoom.zoom_box(zoom.with_context("lv", box), cap.fan.shape, 0.25))
        labels = mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), ["lv"], cine)
        assert labels.shape == cap.labels.shape and (labels > 0).any()
        assert not (labels[:, ~region.mask] > 0).any() and not (labels[:, ~cap.fan] > 0).any()

        # a point on the screen text, off the fan: refused plainly, the result stays as it was
        text = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "LA include")
        text.AddControlPoint(list(cine.pixel_to_ras(cap.fan.shape[1] - 3, 3)))
        c.submit_segmentation(browser, zoomed_spec, "cpu", ["lv", "la"], frame=0, prompt_structure="LA", include=text)
        end = run_to_end(c)[-1]
        assert end.kind == "error" and "outside" in end.text
        after = mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), ["lv"], cine)
        assert np.array_equal(after, labels)
    finally:
        c.shutdown()


def test_panel_says_when_no_fan_is_found_and_when_points_give_no_zoom(scene, zoomed_spec):
    # a still screen capture: nothing varies, so no fan can be found; the panel says so (as the command line
    # does) and that an include point alone gives the zoom no extent, then segments the whole frame
    cap = make_screen_capture(n_frames=4, seed=5, apex=(90, 20))
    still = np.repeat(cap.frames[:1], 4, axis=0)
    seq, browser = add_cine_sequence(scene, still, dicom_us_matrix(angle_deg=0.0), rgb=True)
    cine = mrml.cine_from_sequence(browser)
    y, x = np.argwhere(cap.labels[0] == 1).mean(0)
    point = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "LV include")
    point.AddControlPoint(list(cine.pixel_to_ras(x, y)))
    c = Controller()
    try:
        c.submit_segmentation(browser, zoomed_spec, "cpu", ["lv"], frame=0, include=point)
        end = ok(run_to_end(c))
        region = c.worker.state["region"]
        assert region.source == "none" and region.is_whole_frame and region.zoom is None
        assert "No imaging fan found" in end.text and "segmenting the whole frame" in end.text
        assert "give no extent" in end.text
        labels = mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), ["lv"], cine)
        assert labels.shape == still.shape[:3]
    finally:
        c.shutdown()


def test_panel_runs_a_mirrored_display_flipped_back_and_rebuilds_when_it_changes(scene, zoomed_spec):
    """The panel's Display choice: "mirrored" gives the model the fan's crop flipped left-right, labels land on the
    displayed pixels inside the fan; changing it rebuilds the session; a wrong value is refused before any job."""
    from echosam.errors import EchoSAMError

    cap, seq, browser, cine, roi = capture_in_scene(scene)
    c = Controller()
    try:
        with pytest.raises(EchoSAMError, match="not one of standard, mirrored, auto"):
            c.submit_segmentation(browser, zoomed_spec, "cpu", ["lv"], frame=0, roi=roi, orientation="sideways")
        assert c.worker is None or not c.worker.state.get("session")
        c.submit_segmentation(browser, zoomed_spec, "cpu", ["lv"], frame=0, roi=roi, orientation="mirrored")
        ok(run_to_end(c))
        state = c.worker.state
        region, session = state["region"], state["session"]
        assert region.mirrored and region.orientation["source"] == "given" and region.zoom is not None
        assert np.array_equal(session.cine.frames, region.crop(cine.frames))
        labels = mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), ["lv"], cine)
        assert (labels > 0).any() and not (labels[:, ~region.mask] > 0).any() and not (labels[:, ~cap.fan] > 0).any()
        c.submit_segmentation(browser, zoomed_spec, "cpu", ["lv"], frame=0, roi=roi, orientation="standard")
        ok(run_to_end(c))
        again = c.worker.state
        assert not again["region"].mirrored and again["session"] is not session
        assert again["region"].bbox == region.bbox
        assert np.array_equal(again["session"].cine.frames, region.crop(cine.frames)[:, :, ::-1])
    finally:
        c.shutdown()


def test_panel_warns_of_a_loop_that_looks_mirrored_and_auto_flips_it(scene, zoomed_spec, tmp_path):
    """A simulated four-chamber capture mirrored left-right, in a real MRML sequence: under the default Display
    (standard) the panel segments it as displayed and its status says it looks mirrored; under auto it runs
    flipped back."""
    from sim_fixtures import screen_capture_dicom

    _, screen = screen_capture_dicom(tmp_path, 4300008, n_frames=8, height=128)
    frames = np.ascontiguousarray(screen.frames[:, :, ::-1])
    seq, browser = add_cine_sequence(scene, frames, dicom_us_matrix(angle_deg=0.0), rgb=True)
    cine = mrml.cine_from_sequence(browser)
    roi = lv_roi(scene, cine, screen.labels[0, :, ::-1] == 1)
    c = Controller()
    try:
        c.submit_segmentation(browser, zoomed_spec, "cpu", ["lv"], frame=0, roi=roi)
        end = ok(run_to_end(c))
        shown = c.worker.state["region"]
        assert not shown.mirrored and shown.orientation["looks_mirrored"]
        assert "looks mirrored" in end.text and "--orientation mirrored" in end.text
        c.submit_segmentation(browser, zoomed_spec, "cpu", ["lv"], frame=0, roi=roi, orientation="auto")
        end = ok(run_to_end(c))
        read = c.worker.state["region"]
        assert read.mirrored and read.orientation["source"] == "read" and "flipped back" in end.text
        labels = mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), ["lv"], cine)
        assert not (labels[:, ~read.mask] > 0).any()
    finally:
        c.shutdown()


def test_panel_averages_in_the_companion_its_model_asks_for_read_once_per_fan(scene, tmp_path):
    """A prompted model whose config names a companion (`echosam.companion`; a tiny MA-SAM file here): the panel reads
    it once on the fan, gives each session (each zoom the box gives) its probabilities on that session's crop, says
    so in its status, and labels stay inside the fan."""
    import torch

    from echosam.checkpoints import save_checkpoint
    from echosam.companion import FanReading
    from echosam.models.registry import build_model, preset_config

    torch.manual_seed(0)
    pf = preset_config("masam", "tiny")
    second = save_checkpoint(build_model("masam", pf).eval(), "masam", pf, tmp_path / "masam.safetensors",
                             classes=["lv", "myo", "la"])
    cfg = preset_config("memsam", "tiny")
    cfg.prompt_zoom, cfg.companion = 0.25, {"model": str(second), "weight": 0.5}
    spec = str(save_checkpoint(build_model("memsam", cfg).eval(), "memsam", cfg, tmp_path / "memsam.safetensors",
                               classes=["lv", "myo", "la"]))
    cap, seq, browser, cine, roi = capture_in_scene(scene)
    c = Controller()
    try:
        c.submit_segmentation(browser, spec, "cpu", ["lv"], frame=0, roi=roi)
        end = ok(run_to_end(c))
        state = c.worker.state
        reading, session = state["second"], state["session"]
        assert isinstance(reading, FanReading) and "reads the loop too" in end.text
        assert session.companion.probs["lv"].shape == session.cine.frames.shape
        on_crop = state["region"].crop(reading.fan.uncrop(reading.probs["lv"]))
        assert np.array_equal(session.companion.probs["lv"], on_crop)
        labels = mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), ["lv"], cine)
        assert not (labels[:, ~cap.fan] > 0).any()
        roi.SetSize([s * 1.3 for s in roi.GetSize()])                  # a larger box: another zoom, the same reading
        c.submit_segmentation(browser, spec, "cpu", ["lv"], frame=0, roi=roi)
        ok(run_to_end(c))
        assert c.worker.state["second"] is reading and c.worker.state["session"] is not session
    finally:
        c.shutdown()


def test_panel_reads_a_small_heart_again_magnified_and_says_so(scene, tmp_path):
    """A prompt-free model whose config asks for the heart zoom (the bundled MediViSTA's weights, `echosam.heart_zoom`)
    on a loop imaged deeper than its training fans, in a real MRML sequence through the worker thread: the status
    says the loop was read again magnified, and no label lands outside the magnified rectangle or the fan."""
    import dataclasses

    from echosam.checkpoints import load_model, save_checkpoint
    from sim_fixtures import deep_loop

    loop = deep_loop()
    loaded = load_model("echosam-sim-medivista-small", device="cpu")
    cfg = dataclasses.replace(loaded.config, heart_zoom={"margin": 0.05, "min": 1.15, "max": 2.0})
    spec = str(save_checkpoint(loaded.model, "medivista", cfg, tmp_path / "medivista.safetensors",
                               classes=list(loaded.classes)))
    seq, browser = add_cine_sequence(scene, loop.frames, dicom_us_matrix(angle_deg=0.0))
    cine = mrml.cine_from_sequence(browser)
    c = Controller()
    try:
        c.submit_segmentation(browser, spec, "cpu", ["lv", "myo", "la"])
        end = ok(run_to_end(c))
        state = c.worker.state
        z, region = state["session"].auto_zoom, state["region"]
        assert z is not None and "read the loop a second time, magnified" in end.text
        x0, y0, x1, y1 = z.box
        inside = np.zeros(region.crop(np.zeros(cine.frames.shape[1:], bool)).shape, bool)
        inside[y0:y1 + 1, x0:x1 + 1] = True
        allowed = region.uncrop(inside[None])[0] & loop.fan
        labels = mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), ["lv", "myo", "la"], cine)
        assert labels.any() and not labels[:, ~allowed].any()
    finally:
        c.shutdown()
