"""echosam.slicer: the Slicer panel's decisions and its worker adapter, headless on real MRML
nodes (slicer-core), a real worker thread, a real tiny MemSAM checkpoint and a real local HTTP server."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

# slicer-core (Slicer's real MRML libraries) ships for CPython 3.11 on Linux only; CI asserts it is there
slicer = pytest.importorskip("slicer", reason="slicer-core (MRML libraries) is not installed for this Python")
import slicer.util  # noqa: E402

from echosam import model_zoo, mrml
from echosam import worker as wk
from echosam.slicer import chooser, display, edits, prompts, runs, undo
from echosam.slicer.controller import Controller
from echosam.errors import CheckpointError, EchoSAMError, PromptError
import slicer_scene  # noqa: E402
from slicer_scene import add_cine_sequence, dicom_us_matrix, headless, scene  # noqa: F401

T, H, W = 8, 40, 48


disk = functools.partial(slicer_scene.disk, h=H, w=W)


def cine_frames():
    """A bright beating disk (LV) in a darker ring (MYO) on noise: something the model can follow."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 40, (T, H, W)).astype(np.uint8)
    for t in range(T):
        r = 9 + 3 * np.cos(2 * np.pi * t / T)
        frames[t][disk(20, 22, r + 4)] = 120
        frames[t][disk(20, 22, r)] = 220
    return frames


def wait_actions(controller, timeout=120.0):
    """Poll like the panel's QTimer until the run finished; returns every action."""
    actions, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        actions += controller.poll()
        if any(a.kind in ("result", "error", "cancelled") for a in actions) and not controller.busy:
            return actions + controller.poll()
        time.sleep(0.01)
    raise AssertionError(f"no final action; got {[a.kind for a in actions]}")


def final(actions):
    return [a for a in actions if a.kind in ("result", "error", "cancelled")][-1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOSAM_CACHE", str(tmp_path / "models"))
    return tmp_path / "models"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from echosam.checkpoints import save_checkpoint
    from echosam.models.registry import build_model, preset_config
    torch.manual_seed(0)
    config = preset_config("memsam", "tiny")
    model = build_model("memsam", config).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny-memsam.safetensors"
    return save_checkpoint(model, "memsam", config, path, classes=["lv", "myo", "la"])


# ---- model chooser -----------------------------------------------------------------------------
def test_model_info_reports_weights_status_and_license(cache, tiny_checkpoint):
    sam = model_zoo.get_entry("sam-vit-b")
    info = chooser.model_info("sam-vit-b")
    assert info.status == "missing" and info.can_download and not info.weights_present
    assert "press Download" in info.text and "license: Apache-2.0" in info.text
    cache.mkdir(parents=True)
    (cache / sam.file).write_bytes(b"x")
    info = chooser.model_info("sam-vit-b")
    assert info.status == "cached" and not info.can_download and info.weights_present and "downloaded" in info.text
    demo = chooser.model_info("echosam-demo-memsam-tiny")
    expected = "bundled" if model_zoo.is_available(model_zoo.get_entry("echosam-demo-memsam-tiny")) else "missing"
    assert demo.status == expected and not demo.can_download and demo.prompted
    own = chooser.model_info(str(tiny_checkpoint))
    assert own.status == "file" and own.family == "memsam" and own.prompted
    pth = chooser.model_info(str(cache / "nothing.pth"), family="medivista")
    assert pth.status == "file missing" and not pth.prompted and "NOT FOUND" in pth.text
    with pytest.raises(EchoSAMError, match="Unknown model"):
        chooser.model_info("no-such-model")


def test_plan_use_file_register_own_or_official(tmp_path, tiny_checkpoint):
    sam = model_zoo.get_entry("sam-vit-b")
    pth = tmp_path / "my_sam.pth"
    pth.write_bytes(b"weights")
    plan = chooser.plan_use_file(pth, sam)
    assert plan.action == "register" and plan.entry_name == "sam-vit-b" and "SHA256" in plan.message
    plan = chooser.plan_use_file(pth, None)
    assert plan.action == "official" and plan.family == "memsam" and "family" in plan.message
    assert chooser.plan_use_file(tiny_checkpoint.with_suffix(".json"), sam).action == "own"
    own = chooser.plan_use_file(tiny_checkpoint, None)
    assert own.action == "own" and own.path == str(tiny_checkpoint)
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="lone.json is missing"):
        chooser.plan_use_file(lone)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        chooser.plan_use_file(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match="does not exist"):
        chooser.plan_use_file(tmp_path / "gone.pth")


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    delay = 0.0

    def do_GET(self):  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        step = 1 << 20
        for i in range(0, len(self.payload), step):
            try:
                self.wfile.write(self.payload[i:i + step])
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            time.sleep(self.delay)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_download_on_the_worker_with_progress_sha256_and_cancel(cache, http_server):
    payload = np.random.default_rng(0).integers(0, 255, 3 * (1 << 20) + 17).astype(np.uint8).tobytes()
    _SlowHandler.payload, _SlowHandler.delay = payload, 0.0
    url = f"http://127.0.0.1:{http_server.server_address[1]}/w.pth"
    entry = replace(model_zoo.get_entry("sam-vit-b"), name="local-test", file="local.pth", url=url,
                    sha256=hashlib.sha256(payload).hexdigest())
    c = Controller()
    try:
        c.submit_download(entry)
        actions = wait_actions(c)
        progress = [a for a in actions if a.kind == "progress"]
        assert progress and progress[-1].bar_max == 1000 and "MB" in progress[-1].bar_format
        assert final(actions).kind == "result" and "Weights ready" in final(actions).text
        assert (cache / "local.pth").read_bytes() == payload
        # a wrong published hash: an error, nothing kept
        bad = replace(entry, file="bad.pth", sha256="0" * 64)
        c.submit_download(bad)
        err = final(wait_actions(c))
        assert err.kind == "error" and "SHA256" in err.text and not (cache / "bad.pth").exists()
        # cancel mid-way: no partial file in the cache
        _SlowHandler.delay = 0.3
        c.submit_download(replace(entry, file="slow.pth"))
        deadline = time.monotonic() + 20
        seen = []
        while not any(a.kind == "progress" and a.bar_value > 0 for a in seen) and time.monotonic() < deadline:
            seen += c.poll()
            time.sleep(0.01)
        c.cancel()
        assert final(seen + wait_actions(c)).kind == "cancelled"
        assert sorted(p.name for p in cache.iterdir()) == ["local.pth"]
        # "use a file I already have": checked and copied under the entry's name
        mine = cache.parent / "mine.pth"
        mine.write_bytes(payload)
        c.submit_use_file(str(mine), replace(entry, file="copied.pth"))
        assert final(wait_actions(c)).kind == "result" and (cache / "copied.pth").read_bytes() == payload
        mine.write_bytes(b"other")
        c.submit_use_file(str(mine), replace(entry, file="other.pth"))
        assert "SHA256" in final(wait_actions(c)).text and not (cache / "other.pth").exists()
    finally:
        c.shutdown()


# ---- prompts per (frame, structure) ----------------------------------------------------------------
def test_merge_markup_prompts_replaces_only_that_frame_and_structure():
    base = {"format": "echosam-prompts", "version": 1, "n_frames": T, "shape": [H, W], "structures": ["lv", "myo"],
            "counter": 3, "prompts": [{"structure": "lv", "frame": 0, "version": 1, "points": [[5.0, 6.0]], "labels": [1]},
                                      {"structure": "myo", "frame": 0, "version": 2, "box": [1.0, 1.0, 9.0, 9.0]},
                                      {"structure": "lv", "frame": 4, "version": 3,
                                       "mask": {"size": [H, W], "counts": [H * W]}, "seed": False}]}
    pts = [{"type": "point", "frame": 0, "xy": [5.0, 6.0], "label": 1}]
    assert prompts.merge_markup_prompts(base, 0, "lv", pts) is None                 # unchanged: no new version
    assert prompts.merge_markup_prompts(base, 0, "lv", []) is None                  # no markups: keep prompts
    moved = pts + [{"type": "point", "frame": 0, "xy": [8.0, 9.0], "label": 0}]
    d = prompts.merge_markup_prompts(base, 0, "lv", moved)
    lv0 = [p for p in d["prompts"] if p["structure"] == "lv" and p["frame"] == 0]
    assert len(lv0) == 1 and lv0[0]["points"] == [[5.0, 6.0], [8.0, 9.0]] and lv0[0]["labels"] == [1, 0]
    assert lv0[0]["version"] == 4 == d["counter"]
    assert [p for p in d["prompts"] if p["structure"] == "myo"] == [base["prompts"][1]]   # MYO untouched
    d2 = prompts.merge_markup_prompts(d, 2, "MYO", [{"type": "box", "frame": 2, "box": [2, 2, 8, 8]}])
    assert {(p["structure"], p["frame"]) for p in d2["prompts"]} == {("lv", 0), ("myo", 0), ("lv", 4), ("myo", 2)}
    with pytest.raises(PromptError, match="locked"):
        prompts.merge_markup_prompts(base, 4, "lv", pts)
    assert prompts.filter_prompts(base, ["myo"])["prompts"] == [base["prompts"][1]]
    assert prompts.filter_prompts(base, ["la"]) == {} and prompts.filter_prompts({}, ["lv"]) == {}
    assert prompts.prompt_structure_key("MYO", ["lv", "myo"]) == "myo"
    with pytest.raises(PromptError, match="not among the selected"):
        prompts.prompt_structure_key("LA", ["lv"])


def test_changed_structures_from_a_segment_editor_edit(scene):
    seq, browser = add_cine_sequence(scene, cine_frames(), dicom_us_matrix())
    cine = mrml.cine_from_sequence(browser)
    labels = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        labels[t][disk(20, 22, 13)] = 2
        labels[t][disk(20, 22, 9)] = 1
    seg_seq, _ = mrml.write_segmentation_sequence(labels, cine, browser, ["lv", "myo"])
    mrml.save_session_state(seq, {}, written=edits.label_digests(labels, ["lv", "myo"]))
    written = mrml.load_session_state(seq)["written"]
    k = 3
    browser.SetSelectedItemNumber(k)
    masks = {s: mrml.read_segment_mask(browser, seg_seq, k, s, cine) for s in ("lv", "myo")}
    assert edits.changed_structures(masks, written, k) == []
    edited = disk(18, 25, 7)
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited[None].astype(np.uint8), browser.GetProxyNode(seg_seq),
                                                     "LV_endo", browser.GetProxyNode(seq))
    masks = {s: mrml.read_segment_mask(browser, seg_seq, k, s, cine) for s in ("lv", "myo")}
    assert edits.changed_structures(masks, written, k) == ["lv"]
    assert edits.changed_structures(masks, {}, k) == ["lv", "myo"]              # nothing recorded: any mask counts
    assert edits.lock_plan({"lv": [k]}, k, ["lv", "myo"]) == "unlock" and edits.lock_plan({"lv": [1]}, k, ["lv"]) == "lock"


# ---- runs and messages ------------------------------------------------------------------------------
def test_run_tracker_turns_messages_into_actions_and_drops_the_rest_after_an_error():
    worker = wk.Worker()
    tracker = runs.RunTracker()
    try:
        def frames(state, progress, cancel):
            for i in range(5):
                progress(i + 1, 5, "x")
            return "ok"

        def boom(state, progress, cancel):
            raise PromptError("Place a point first.")

        run = runs.Run("segment")
        for role, fn in (("encode", frames), ("prompts", boom), ("result", frames)):
            run.roles[worker.submit(role, fn)] = role
        tracker.add(run)
        assert worker.wait_idle(10)
        actions = [tracker.handle(m) for m in worker.poll()]
        kinds = [a.kind for a in actions]
        assert kinds[0] == "progress" and actions[0].text == "Encoding frames: 5/5 frames" and actions[0].bar_max == 5
        assert "error" in kinds and actions[kinds.index("error")].text == "Place a point first."
        assert kinds[kinds.index("error") + 1:] == ["ignore"] * (len(kinds) - kinds.index("error") - 1)
        assert run.finished and run.done_roles == ["encode"] and not tracker.active
    finally:
        worker.shutdown()


def test_results_rows_and_button_states():
    summary = {"ed_frames": [0, 20], "es_frames": [9], "edv_ml": 101.26, "esv_ml": 45.0, "ef_percent": 55.56,
               "beats": [{"ed_frame": 0, "es_frame": 9, "edv_ml": 101.26, "esv_ml": 45.0, "ef_percent": 55.56,
                          "complete_cycle": True}]}
    rows = dict(display.results_rows(summary))
    assert rows["EDV (ml)"] == "101.3" and rows["ESV (ml)"] == "45.0" and rows["EF (%)"] == "55.6"
    assert list(rows)[:3] == ["EDV (ml)", "ESV (ml)", "EF (%)"] and rows["Beat 1: ED 0 / ES 9"] == "101.3 / 45.0 ml, EF 55.6 %"
    assert dict(display.results_rows({"ef_percent": None}))["EF (%)"] == "-"
    # a model whose checkpoint records its EF error shows it right under the EF, never without an EF
    note = "EF error of this model where the truth was known (...): mean absolute 7.9 to 15.1 points"
    shown = display.results_rows(dict(summary, ef_accuracy=note))
    assert shown[3] == ("EF: the model's known error", note) and len(shown) == len(display.results_rows(summary)) + 1
    assert "EF: the model's known error" not in dict(display.results_rows({"ef_percent": None, "ef_accuracy": note}))
    # a systole of few frames is named under the EF (only where an EF is shown); 9 frames are enough
    few = dict(display.results_rows(dict(summary, systole_frames=4)))
    assert few["EF: few frames of systole"].startswith("4 frames from ED to ES: this EF tends to read low")
    assert "EF: few frames of systole" not in dict(display.results_rows(dict(summary, systole_frames=9)))
    assert "EF: few frames of systole" not in dict(display.results_rows({"ef_percent": None, "systole_frames": 4}))
    busy = display.button_states(True, True, busy=True, prompted=True, weights_present=True, can_download=False,
                            has_result=True)
    assert busy["cancelButton"] and not any(v for k, v in busy.items() if k.endswith("Button") and k not in
                                            ("cancelButton", "jumpEDButton", "jumpESButton", "showCurveButton"))
    idle = display.button_states(True, True, busy=False, prompted=False, weights_present=False, can_download=True,
                            has_result=False)
    assert idle["downloadButton"] and not idle["segmentButton"] and not idle["propagateButton"]
    assert not idle["cancelButton"]


# ---- the whole panel workflow, headless ----------------------------------------------------------
def test_controller_segment_prompt_structures_correct_lock_and_undo(scene, tiny_checkpoint):
    seq, browser = add_cine_sequence(scene, cine_frames(), dicom_us_matrix())
    cine = mrml.cine_from_sequence(browser)
    lv_pts = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "LV include")
    lv_pts.AddControlPoint(list(cine.pixel_to_ras(22, 20)))
    c = Controller()
    spec = str(tiny_checkpoint)
    try:
        with pytest.raises(PromptError, match="not among the selected"):
            c.submit_segmentation(browser, spec, "cpu", ["lv"], frame=0, prompt_structure="MYO", include=lv_pts)
        c.submit_segmentation(browser, spec, "cpu", ["lv", "myo"], frame=0, prompt_structure="LV", include=lv_pts)
        actions = wait_actions(c, 300)
        res = final(actions)
        assert res.kind == "result", res.text + res.details
        texts = [a.text for a in actions if a.kind == "progress"]
        assert any(t.startswith("Encoding frames:") and "frames" in t for t in texts)
        assert any(t.startswith("Segmenting:") for t in texts)
        seg_seq = mrml.find_segmentation_sequence(browser)
        assert seg_seq.GetNumberOfDataNodes() == T and "ed_frames" in res.value and res.value["chart"] is not None
        assert res.value["compute_path"].startswith("cpu ") and "thread" in res.value["compute_path"]
        assert display.compute_text(res.value) == "Computed with: " + res.value["compute_path"]
        assert c.can_undo(browser)
        state = mrml.load_session_state(seq)
        assert {p["structure"] for p in state["prompts"]["prompts"]} == {"lv"} and set(state["written"]) == set(range(T))

        # MYO gets its own prompt on the same frame; LV keeps its points
        myo_roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "MYO box")
        myo_roi.SetCenterWorld(list(cine.pixel_to_ras(22, 20)))
        myo_roi.SetSizeWorld([9.0, 9.0, 2.0])
        c.submit_segmentation(browser, spec, "cpu", ["lv", "myo"], frame=0, prompt_structure="MYO", roi=myo_roi,
                              precision="fp32")          # the panel's "Force fp32"
        res = final(wait_actions(c, 300))
        assert res.kind == "result" and res.value["compute_path"].startswith("cpu fp32 (forced)")
        items = {(p["structure"], p["frame"]): p for p in mrml.load_session_state(seq)["prompts"]["prompts"]}
        assert set(items) == {("lv", 0), ("myo", 0)} and "box" in items[("myo", 0)] and "points" in items[("lv", 0)]

        # correct LV on frame k in the proxy -> "Propagate edits" locks only LV there
        k = 5
        browser.SetSelectedItemNumber(k)
        edited = disk(21, 23, 8)
        slicer.util.updateSegmentBinaryLabelmapFromArray(edited[None].astype(np.uint8), browser.GetProxyNode(seg_seq),
                                                         "LV_endo", browser.GetProxyNode(seq))
        run = c.submit_segmentation(browser, spec, "cpu", ["lv", "myo"], frame=k, from_edit=True)
        assert run.data["corrected"] == [k]
        res = final(wait_actions(c, 300))
        assert res.kind == "result" and "Corrections taken from frames 5 (locked)" in res.text
        assert mrml.load_session_state(seq)["locked"] == {"lv": [k], "myo": [], "la": []}
        assert np.array_equal(mrml.read_segment_mask(browser, seg_seq, k, "lv", cine), edited)

        # Lock / unlock toggles frame k (no model needed)
        assert "unlocked" in c.toggle_lock(browser, k, ["lv", "myo"])
        assert mrml.load_session_state(seq)["locked"]["lv"] == []
        assert "locked" in c.toggle_lock(browser, k, ["lv"])
        assert mrml.load_session_state(seq)["locked"]["lv"] == [k]

        # Undo: the lock, then the unlock, step by step
        assert c.undo(browser)["undone"] == "Lock" and mrml.load_session_state(seq)["locked"]["lv"] == []
        assert c.undo(browser)["undone"] == "Lock" and mrml.load_session_state(seq)["locked"]["lv"] == [k]

        # a failing run reports the error; the next run rebuilds what it needs
        c.submit_segmentation(browser, str(tiny_checkpoint.parent / "missing.safetensors"), "cpu", ["lv"], frame=0,
                              include=lv_pts)
        err = final(wait_actions(c))
        assert err.kind == "error" and "missing.safetensors" in err.text
        assert not c.busy
    finally:
        c.shutdown()


def test_controller_refuses_lone_volumes_and_early_actions(scene):
    vol = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "still")
    slicer.util.updateVolumeFromArray(vol, cine_frames()[:1])
    c = Controller()
    with pytest.raises(EchoSAMError, match="segmentation sequence"):
        c.submit_segmentation(vol, "echosam-demo-memsam-tiny", "cpu", ["lv"])
    seq, browser = add_cine_sequence(scene, cine_frames(), np.eye(4))
    with pytest.raises(EchoSAMError, match="Segment first"):
        c.toggle_lock(browser, 0, ["lv"])
    with pytest.raises(EchoSAMError, match="Nothing to undo"):
        c.undo(browser)
    assert not c.has_result(browser) and c.curve_chart(browser) is None
    c.shutdown()


def test_the_panel_shows_no_ef_for_a_drifting_lv_and_says_why(scene):
    """The panel reads the scene's labels as a model's, as `echosam segment` does: an LV that only shrinks over
    3 s (a mask drifting away, no heart beats so) gives no EF, and the status line says why; the same labels
    read as a human's would have given 'single partial cycle' with an EF from the global max and min."""
    from echosam.cardiac import analyse

    n, dt = 30, 0.1
    rng = np.random.default_rng(1)
    seq, browser = add_cine_sequence(scene, rng.integers(0, 200, (n, H, W)).astype(np.uint8), dicom_us_matrix(), dt=dt)
    cine = mrml.cine_from_sequence(browser)
    labels = np.stack([disk(20, 22, 14 - 8 * t / (n - 1)).astype(np.uint8) for t in range(n)])
    mrml.write_segmentation_sequence(labels, cine, browser, ["lv"])
    assert analyse(labels, times_s=np.arange(n) * dt).status == "single partial cycle"
    c = Controller()
    try:
        summary = c.summary(browser)
    finally:
        c.shutdown()
    assert summary["status"] == "no cardiac cycle" and summary["ef_percent"] is None
    assert dict(display.results_rows(summary))["EF (%)"] == "-"
    text = display.done_text({}, summary)
    assert text.startswith("Done.") and "no EF is reported" in text
    ok = dict(summary, ef_percent=55.0, message="1 ED->ES beat(s)")
    assert "beat" not in display.done_text({}, ok)          # an EF shown: its routine message stays in the tooltip


def test_the_panel_checks_the_ef_against_the_box_shows_the_result_first_and_flags_a_moving_ef(scene, monkeypatch):
    """Segment from an ROI box with the check on: the result is written and shown first, then the same loop is
    segmented with the box 5 % larger and smaller on sessions of their own, and the EF is compared; told that
    any spread is too much, the panel keeps the EF and its numbers and says what to do. A run with a correction
    is not checked (the correction, not the box, decides those frames)."""
    from echosam import ef_check
    from sim_fixtures import small
    from training.datasets.clips import mask_box
    from training.simulator.scene import simulate

    truth = simulate(small(4300011, n_frames=16, height=128))      # a seed never used for training
    seq, browser = add_cine_sequence(scene, truth.frames, dicom_us_matrix(angle_deg=0.0), dt=1.0 / truth.fps)
    cine = mrml.cine_from_sequence(browser)
    x0, y0, x1, y1 = mask_box(truth.labels[0] == 1)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "LV box")
    roi.SetCenterWorld(list(cine.pixel_to_ras((x0 + x1) / 2, (y0 + y1) / 2)))
    roi.SetSizeWorld([(x1 - x0) * 0.27, (y1 - y0) * 0.31, 2.0])
    c = Controller()
    args = dict(frame=0, prompt_structure="LV", roi=roi, ef_check=True)
    try:
        run = c.submit_segmentation(browser, "echosam-sim-memsam-small", "cpu", ["lv"], **args)
        assert run.final == "ef_check"
        actions = wait_actions(c, 600)
        shown = [a for a in actions if a.kind == "result"]
        assert [a.role for a in shown] == ["result", "ef_check"], [(a.kind, a.text) for a in actions]
        first, checked = shown[0].value, shown[1].value
        assert "Checking the EF against the box" in shown[0].text and "ef_check" not in first
        assert mrml.find_segmentation_sequence(browser).GetNumberOfDataNodes() == 16    # written before the check
        assert any(a.kind == "progress" and a.text.startswith("Checking the EF against the box:") for a in actions)
        check = checked["ef_check"]
        assert np.isfinite(first["ef_percent"]) and check["ef_percent"] == pytest.approx(first["ef_percent"], abs=0.01)
        assert check["box_changes"] == [0.05, -0.05] and len(check["variant_ef_percent"]) == 2
        assert (checked.get("status") == "prompt-dependent EF") == (check["stable"] is False)
        row = dict(display.results_rows(checked))["EF: the box as drawn, +5 %, -5 %"]
        assert row.startswith(f"{first['ef_percent']:.1f} %") and ("steady" in row) == (check["stable"] is True)

        monkeypatch.setattr(ef_check, "MAX_SPREAD", -1.0)            # any spread is too much
        c.submit_segmentation(browser, "echosam-sim-memsam-small", "cpu", ["lv"], **args)
        res = final(wait_actions(c, 600))
        assert res.role == "ef_check" and res.value["status"] == "prompt-dependent EF"
        shown = ef_check.EFCheck(check["ef_percent"], check["variant_ef_percent"],
                                 reported_change=res.value["ef_check"]["reported_box_change"]).reported_ef_percent
        assert res.value["ef_percent"] == pytest.approx(shown, abs=0.01) and res.value["edv_ml"] > 0
        assert "The EF depends on the prompt" in res.text and "Segment Editor" in res.text
        assert res.value["ef_check"]["variant_ef_percent"] == check["variant_ef_percent"]   # same boxes, same runs

        c.submit_segmentation(browser, "echosam-sim-memsam-small", "cpu", ["lv"], **args)      # Cancel in the check
        actions, deadline = [], time.monotonic() + 600
        while not any(a.kind == "result" for a in actions) and time.monotonic() < deadline:
            actions += c.poll()
            time.sleep(0.01)
        c.cancel()
        end = final(actions + wait_actions(c, 600))
        assert end.kind == "cancelled" and "result shown is kept" in end.text, end.text
        assert mrml.find_segmentation_sequence(browser).GetNumberOfDataNodes() == 16

        # the middle reading is the box 5 % larger: it becomes the result, the scene's prompts say so, Undo
        # goes back to the box as drawn, and a correction propagates from its session
        monkeypatch.setattr(ef_check, "median_reading", lambda runs: 0.05)
        monkeypatch.setattr(ef_check, "MAX_SPREAD", 8.0)
        c.submit_segmentation(browser, "echosam-sim-memsam-small", "cpu", ["lv"], **args)
        res = final(wait_actions(c, 600))
        assert res.role == "ef_check" and res.value["ef_check"]["reported_box_change"] == 0.05
        assert res.value["ef_percent"] == pytest.approx(check["variant_ef_percent"][0], abs=0.01)
        assert "shown: +5 %" in dict(display.results_rows(res.value))["EF: the box as drawn, +5 %, -5 %"]
        state = mrml.load_session_state(seq)
        assert state["prompts"]["box_change"] == 0.05
        assert mrml.get_json_attribute(seq, undo.ATTRIBUTE)[-1]["what"] == "Middle reading"
        middle = mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), ["lv"], cine)
        assert np.array_equal(middle, c.worker.state["region"].uncrop(c.worker.state["session"].labels))
        assert c.undo(browser)["undone"] == "Middle reading"         # back to the box as drawn: reading and masks
        assert "box_change" not in mrml.load_session_state(seq)["prompts"]
        assert not np.array_equal(mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), ["lv"], cine),
                                  middle)
        c.submit_segmentation(browser, "echosam-sim-memsam-small", "cpu", ["lv"], **args)      # and again
        assert final(wait_actions(c, 600)).value["ef_check"]["reported_box_change"] == 0.05
        state = mrml.load_session_state(seq)

        k = 6
        browser.SetSelectedItemNumber(k)
        seg_seq = mrml.find_segmentation_sequence(browser)
        slicer.util.updateSegmentBinaryLabelmapFromArray((truth.labels[k] == 1)[None].astype(np.uint8),
                                                         browser.GetProxyNode(seg_seq), "LV_endo",
                                                         browser.GetProxyNode(seq))
        run = c.submit_segmentation(browser, "echosam-sim-memsam-small", "cpu", ["lv"], **args)
        assert run.data["corrected"] == [k] and run.final == "result" and not run.early
        res = final(wait_actions(c, 600))
        assert res.kind == "result" and "ef_check" not in res.value and "Checking the EF" not in res.text
        drawn = [q["box"] for q in state["prompts"]["prompts"] if q["structure"] == "lv" and "box" in q][0]
        grown = c.worker.state["region"].box_to_crop(ef_check.scaled_box(drawn, 0.05, state["prompts"]["shape"]))
        used = [q["box"] for q in c.worker.state["session"].prompts_to_dict()["prompts"] if "box" in q][0]
        assert np.allclose(used, grown)                               # propagated from the middle reading
        after = mrml.read_labels(browser, mrml.find_segmentation_sequence(browser), ["lv"], cine)
        assert np.array_equal(after[:k], middle[:k]) and mrml.load_session_state(seq)["prompts"]["box_change"] == 0.05
    finally:
        c.shutdown()
