"""A mirrored display (an apical view with the LV on the screen's left): the region flips the model's crop
and every mapping flips back (`echosam.fan.FanRegion.orientation`), `echosam.orientation` reads which way a
loop is shown with the bundled prompt-free model, and `echosam segment` on a mirrored screen capture gives
exactly the mirror image of what it gives the capture as displayed, on the cine's own pixels."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from echosam import fan, orientation, zoom
from echosam.cine import Cine
from echosam.errors import EchoSAMError
from echosam.io import read_labels
from echosam.metrics import dice as dice_

from screen_fixtures import make_screen_capture
from sim_fixtures import screen_capture_dicom
from training.datasets.clips import mask_box

A4C_SEED = 4300008        # an apical four-chamber loop no training set used (training seeds: 0-479, 100000-100199)


def mirrored(region):
    return dataclasses.replace(region, orientation={"mirrored": True, "source": "given", "margin": None})


@pytest.fixture(scope="module")
def cap():
    return make_screen_capture(n_frames=6, seed=3, apex=(70, 12))        # an off-centre fan


def test_a_mirrored_region_flips_the_crop_and_every_mapping_flips_back(cap, rotated_geometry):
    c = Cine.from_array(cap.frames, ijk_to_ras=rotated_geometry, fps=25)
    shown = fan.find_region(c)
    r = mirrored(shown)
    x0, y0, x1, y1 = r.bbox
    h, w = r.crop_shape
    assert r.mirrored and not shown.mirrored and not r.is_identity
    # the model's crop is the displayed crop flipped left-right, 0 outside the fan
    assert np.array_equal(r.crop(c.frames), shown.crop(c.frames)[:, :, ::-1])
    assert np.array_equal(r.crop_mask, shown.crop_mask[:, ::-1])
    cropped = r.crop_cine(c)
    assert np.array_equal(cropped.frames, r.crop(c.frames)) and cropped.spacing == pytest.approx(c.spacing)
    for i, j in [(0, 0), (w - 1, h - 1), (7, 3)]:       # a crop pixel is still the same point in patient space
        assert np.allclose(cropped.pixel_to_ras(i, j), c.pixel_to_ras(x1 - i, y0 + j))
    # labels drawn on the crop land on the displayed pixels: a mark on the crop's left is on the screen's right
    marks = np.zeros((c.n_frames, h, w), np.uint8)
    marks[:, :, : w // 2] = 1
    back = r.uncrop(marks)
    assert not back[:, ~r.mask].any()
    assert back[:, :, x1 - w // 2 + 1:x1 + 1][:, r.mask[:, x1 - w // 2 + 1:x1 + 1]].all()
    assert not back[:, :, x0:x1 - w // 2 + 1].any()
    labels = (cap.labels * r.mask).astype(np.uint8)
    assert np.array_equal(r.uncrop(r.crop(labels)), labels)
    # points and boxes: x measured from the crop's right edge; a box keeps x0 <= x1
    pts = np.array([[x0 + 5.0, y0 + 9.0], [x1, y1]])
    assert np.allclose(r.to_crop_xy(pts), [[w - 6.0, 9.0], [0.0, h - 1.0]])
    assert np.allclose(r.to_full_xy(r.to_crop_xy(pts)), pts)
    assert r.box_to_crop((x0 + 2, y0 + 3, x0 + 10, y0 + 20)) == (w - 11.0, 3.0, w - 3.0, 20.0)
    assert r.box_to_crop((x0 - 10, y0, x1 + 10, y1 + 50)) == (0.0, 0.0, w - 1.0, h - 1.0)


def test_an_apex_down_region_turns_the_crop_upright_and_maps_back(cap, rotated_geometry):
    c = Cine.from_array(cap.frames, ijk_to_ras=rotated_geometry, fps=25)
    shown = fan.find_region(c)
    down = dataclasses.replace(shown, orientation={"mirrored": False, "apex_down": True})
    both = dataclasses.replace(shown, orientation={"mirrored": True, "apex_down": True})
    x0, y0, x1, y1 = shown.bbox
    h, w = shown.crop_shape
    assert np.array_equal(down.crop(c.frames), shown.crop(c.frames)[:, ::-1, :])
    assert np.array_equal(both.crop(c.frames), shown.crop(c.frames)[:, ::-1, ::-1])
    for r, col, row in ((down, lambda i: x0 + i, lambda j: y1 - j), (both, lambda i: x1 - i, lambda j: y1 - j)):
        cropped = r.crop_cine(c)
        for i, j in [(0, 0), (w - 1, h - 1), (7, 3)]:
            assert np.allclose(cropped.pixel_to_ras(i, j), c.pixel_to_ras(col(i), row(j)))
        labels = (cap.labels * r.mask).astype(np.uint8)
        assert np.array_equal(r.uncrop(r.crop(labels)), labels)
        pts = np.array([[x0 + 5.0, y0 + 9.0], [x1, y1]])
        assert np.allclose(r.to_full_xy(r.to_crop_xy(pts)), pts)
    assert np.allclose(down.to_crop_xy([[x0 + 5.0, y0 + 9.0]]), [[5.0, h - 10.0]])
    assert down.box_to_crop((x0 + 2, y0 + 3, x0 + 10, y0 + 20)) == (2.0, h - 21.0, 10.0, h - 4.0)


def test_the_apex_is_found_at_the_bottom_of_a_fan_shown_upside_down(cap):
    c = Cine.from_array(cap.frames)
    upright = fan.find_region(c)
    flipped = Cine.from_array(np.ascontiguousarray(cap.frames[:, ::-1]))
    upside_down = fan.find_region(flipped)
    assert not orientation.apex_at_bottom(upright) and orientation.apex_at_bottom(upside_down)
    assert not orientation.apex_at_bottom(fan.FanRegion.from_box(c.shape[1:], upright.bbox))   # a box: no sector
    said = []
    r = orientation.orient(upside_down, flipped, "standard", notify=said.append, check=False)
    assert r.apex_down and not r.mirrored and len(said) == 1 and "apex is at the bottom" in said[0]


def test_the_orientation_is_kept_by_the_zoom_and_by_a_saved_result(cap, tmp_path):
    c = Cine.from_array(cap.frames)
    r = mirrored(fan.find_region(c))
    x0, y0, x1, y1 = r.bbox
    cx = (x0 + x1) // 2
    z = zoom.zoom_region(r, (cx - 10, y0 + 40, cx + 10, y0 + 60), 0.25)
    assert z.zoom is not None and z.mirrored
    z.save(tmp_path)
    again = fan.FanRegion.load(tmp_path, json.loads(json.dumps(z.summary())), c.shape[1:])
    assert again.mirrored and again.orientation == z.orientation and again.zoom == z.zoom
    assert np.array_equal(again.crop_cine(c).frames, z.crop_cine(c).frames)
    old = {k: v for k, v in z.summary().items() if k != "orientation"}      # a result saved before orientation
    assert not fan.FanRegion.load(tmp_path, old, c.shape[1:]).mirrored


def test_orientation_settings_are_checked_and_recorded(cap):
    c = Cine.from_array(cap.frames)
    region = fan.find_region(c)
    assert orientation.parse_orientation(None) == "standard"
    assert orientation.parse_orientation(" Mirrored") == "mirrored"
    with pytest.raises(EchoSAMError, match="standard, mirrored, auto"):
        orientation.parse_orientation("flipped")
    said = []
    r = orientation.orient(region, c, "mirrored", notify=said.append)
    assert r.mirrored and not r.apex_down and not said
    assert r.orientation == {"mirrored": True, "apex_down": False, "source": "given", "margin": None}
    assert not orientation.orient(region, c, "standard").mirrored and r.bbox == region.bbox


def test_a_reader_that_does_not_load_skips_the_check_and_refuses_auto(cap, monkeypatch):
    """The default's reading is a check: when its model cannot load, the loop is segmented as displayed, with a
    notice; auto, which needs it, is refused with what to do instead."""
    c = Cine.from_array(cap.frames)
    region = fan.find_region(c)
    monkeypatch.setattr(orientation, "READER", "no-such-reader")
    said = []
    r = orientation.orient(region, c, "standard", notify=said.append)
    assert not r.mirrored and r.orientation["margin"] is None
    assert len(said) == 1 and "could not run" in said[0] and "no-such-reader" in said[0]
    with pytest.raises(EchoSAMError, match="--orientation standard or mirrored"):
        orientation.orient(region, c, "auto")


@pytest.fixture(scope="module")
def a4c(tmp_path_factory):
    """A simulated four-chamber screen capture as displayed, and the same capture mirrored left-right (RGB
    ultrasound DICOMs without a region), with their truth."""
    from training.simulator.screen import write_dicom

    folder = tmp_path_factory.mktemp("a4c")
    path, screen = screen_capture_dicom(folder, A4C_SEED, n_frames=12, height=160)
    flipped = dataclasses.replace(screen, frames=np.ascontiguousarray(screen.frames[:, :, ::-1]),
                                  labels=np.ascontiguousarray(screen.labels[:, :, ::-1]),
                                  fan=np.ascontiguousarray(screen.fan[:, ::-1]))
    mirror_path = folder / "a4c_mirrored.dcm"
    write_dicom(flipped, mirror_path, with_region=False, seed=A4C_SEED)
    return path, screen, mirror_path, flipped


def test_the_bundled_reader_finds_a_mirrored_four_chamber_view(a4c):
    from echosam.io import read_cine

    path, _, mirror_path, _ = a4c
    said = []
    for p, expect in ((path, False), (mirror_path, True)):
        c = read_cine(p)
        r = orientation.orient(fan.find_region(c), c, "auto", notify=said.append)
        assert r.orientation["source"] == "read" and r.mirrored is expect, r.orientation
        assert abs(r.orientation["margin"]) > orientation.MIRROR_MARGIN
    assert len(said) == 1 and "looks mirrored" in said[0] and "--orientation standard" in said[0]
    # the default, standard: the mirrored loop is read, segmented as displayed, and the warning names the option
    c = read_cine(mirror_path)
    kept = orientation.orient(fan.find_region(c), c, notify=said.append)
    assert not kept.mirrored and kept.orientation["looks_mirrored"] and kept.orientation["source"] == "given"
    assert len(said) == 2 and "segmented as displayed" in said[1] and "--orientation mirrored" in said[1]
    unchecked = orientation.orient(fan.find_region(c), c, "standard", notify=said.append, check=False)
    assert unchecked.orientation == {"mirrored": False, "apex_down": False, "source": "given", "margin": None}
    assert len(said) == 2


def _segment(path, out, extra):
    from echosam.cli import main

    assert main(["-q", "segment", str(path), "-o", str(out), "--device", "cpu", "--no-ef-check"] + extra) == 0
    labels, _ = read_labels(out / "labels.seq.nrrd")
    return labels, json.loads((out / "run.json").read_text()), json.loads((out / "report.json").read_text())


def _box(mask, width=None):
    x0, y0, x1, y1 = (int(v) for v in mask_box(mask))
    return (x0, y0, x1, y1) if width is None else (width - 1 - x1, y0, width - 1 - x0, y1)


def test_segment_on_a_mirrored_capture_is_the_mirror_image_of_the_capture_as_displayed(a4c, tmp_path, capsys):
    """The same region and boxes, mirrored: `echosam segment` gives exactly the mirrored labels and the same EF,
    whether the user names the mirrored display or it is read (auto); `correct` keeps the orientation."""
    path, screen, mirror_path, flipped = a4c
    W = screen.fan.shape[1]
    x0, y0, x1, y1 = screen.bbox
    structures = ["--structures", "lv,myo,la"]
    names = (("lv", 1), ("myo", 2), ("la", 3))
    boxes = [f"{k}:{','.join(map(str, _box(screen.labels[0] == v)))}" for k, v in names]
    mboxes = [f"{k}:{','.join(map(str, _box(screen.labels[0] == v, W)))}" for k, v in names]
    shown, run, report = _segment(path, tmp_path / "shown", structures + sum((["--box", b] for b in boxes), []) +
                                  ["--region", f"{x0},{y0},{x1},{y1}"])          # the default: standard
    region = ["--region", f"{W - 1 - x1},{y0},{W - 1 - x0},{y1}"]
    mprompts = sum((["--box", b] for b in mboxes), [])
    named, mrun, mreport = _segment(mirror_path, tmp_path / "named",
                                    structures + mprompts + region + ["--orientation", "mirrored"])
    shown_orientation = run["region"]["orientation"]          # the default reads it, to warn, and flips nothing
    assert shown_orientation["mirrored"] is False and shown_orientation["looks_mirrored"] is False
    assert shown_orientation["source"] == "given" and shown_orientation["margin"] < -orientation.MIRROR_MARGIN
    assert mrun["region"]["orientation"] == {"mirrored": True, "apex_down": False, "source": "given", "margin": None}
    assert (shown > 0).sum() > 1000 and np.array_equal(named, shown[:, :, ::-1])
    assert mreport["summary"]["ef_percent"] == pytest.approx(report["summary"]["ef_percent"], abs=1e-9)
    assert "looks mirrored" not in capsys.readouterr().err          # a standard display: no warning
    read, rrun, _ = _segment(mirror_path, tmp_path / "read", structures + mprompts + region + ["--orientation", "auto"])
    assert rrun["region"]["orientation"]["source"] == "read" and rrun["region"]["orientation"]["mirrored"] is True
    assert "looks mirrored" in capsys.readouterr().err
    assert np.array_equal(read, named)
    # a correction drawn on the mirrored display lands where it was drawn, and is kept as drawn
    from echosam.cli import main
    lv = flipped.labels[5] == 1
    np.save(tmp_path / "fix.npy", lv.astype(np.uint8))
    assert main(["-q", "correct", str(tmp_path / "named"), "--mask", str(tmp_path / "fix.npy"), "--frame", "5",
                 "--structure", "lv", "--device", "cpu", "--cine", str(mirror_path)]) == 0
    corrected, _ = read_labels(tmp_path / "named" / "labels.seq.nrrd")
    assert np.array_equal(corrected[5] == 1, lv) and np.array_equal(corrected[:5], named[:5])
    assert json.loads((tmp_path / "named" / "run.json").read_text())["region"]["orientation"]["mirrored"] is True


def test_segment_turns_an_apex_down_capture_upright(a4c, tmp_path, capsys):
    """The capture shown apex down (upside down), through `echosam segment` with its defaults: the fan's shape says
    so, the model sees the loop upright, and the labels, on the cine as displayed, score as the upright capture's."""
    from training.simulator.screen import write_dicom

    path, screen, _, _ = a4c
    down = dataclasses.replace(screen, frames=np.ascontiguousarray(screen.frames[:, ::-1]),
                               labels=np.ascontiguousarray(screen.labels[:, ::-1]),
                               fan=np.ascontiguousarray(screen.fan[::-1]))
    down_path = tmp_path / "a4c_apex_down.dcm"
    write_dicom(down, down_path, with_region=False, seed=A4C_SEED)
    scores = {}
    for name, p, sc in (("upright", path, screen), ("down", down_path, down)):
        boxes = sum((["--box", f"{k}:{','.join(map(str, _box(sc.labels[0] == v)))}"]
                     for k, v in (("lv", 1), ("myo", 2), ("la", 3))), [])
        labels, run, _ = _segment(p, tmp_path / name, ["--structures", "lv,myo,la"] + boxes)
        assert run["region"]["orientation"]["apex_down"] is (name == "down")
        assert not labels[:, ~sc.fan].any()
        scores[name] = [np.mean([dice_(labels[t] == k, sc.labels[t] == k) for t in range(len(labels))])
                        for k in (1, 2, 3)]
    assert "apex is at the bottom" in capsys.readouterr().err
    assert scores["down"][0] > 0.8 and np.allclose(scores["down"], scores["upright"], atol=0.05), scores
