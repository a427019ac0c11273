"""The ultrasound region (`echosam.fan`): found from DICOM US regions or from the pixels of screen
captures (moving speckle vs static text, colour never fan), the crop/uncrop mapping, overrides, and
cines without a fan."""
import numpy as np
import pytest

from echosam import fan
from echosam.cine import Cine
from echosam.errors import EchoSAMError
from echosam.io import read_cine
from screen_fixtures import dice, fan_checks, make_screen_capture, write_screen_dicom


@pytest.fixture(scope="module")
def cap():
    return make_screen_capture(n_frames=12, seed=1)


def test_detected_from_the_pixels_of_a_screen_capture(cap):
    c = Cine.from_array(cap.frames, spacing=cap.spacing)
    assert c.metadata["colour_pixels"][cap.frames[0].max(-1) - cap.frames[0].min(-1) > 100].all()
    r = fan.find_region(c)
    assert r.source == "detected" and r.notice is None
    fan_checks(r.mask, cap.fan, cap.furniture)
    x0, y0, x1, y1 = r.bbox
    tx0, ty0, tx1, ty1 = cap.bbox
    assert abs(x0 - tx0) <= 2 and abs(y0 - ty0) <= 3 and abs(x1 - tx1) <= 2 and abs(y1 - ty1) <= 2
    assert r.summary()["fan_fraction"] == pytest.approx(cap.fan.mean(), abs=0.01)


def test_grey_capture_without_colour_information(cap):
    """A grey copy (colour lost, e.g. an 8-bit NRRD): the moving ECG marker and the trace are thin and are
    cut off by the shape rules; the static text never moves."""
    r = fan.find_region(Cine.from_array(cap.grey))
    assert r.source == "detected"
    assert dice(r.mask, cap.fan) >= 0.97 and not (r.mask & cap.furniture & ~cap.fan).any()


@pytest.mark.parametrize("apex", [(60, 10), (150, 40)])
def test_off_centre_fans(apex):
    c = make_screen_capture(n_frames=8, apex=apex, radius=105.0, half_angle=30.0, seed=2)
    fan_checks(fan.find_region(Cine.from_array(c.frames)).mask, c.fan, c.furniture)


def _dark_near_field(c, depth: float):
    """The capture with its near field (the fan's pixels within ``depth`` of the apex row) black on every
    frame, as on a dark display: nothing moves there. Returns (frames, the rows blanked as a mask)."""
    ys = np.nonzero(c.fan)[0]
    near = c.fan & (np.arange(c.fan.shape[0])[:, None] < ys.min() + depth)
    frames = c.frames.copy()
    frames[:, near] = 0
    return frames, near


def test_a_fan_whose_near_field_never_moves_keeps_its_apex():
    """A dark display's black, still near field: the moving area starts in a cut across the sector, and
    the apex of the LV lies above it. The sector's edges are extended to their apex; the fan is whole."""
    c = make_screen_capture(n_frames=10, apex=(120, 20), radius=140.0, half_angle=35.0, size=(190, 260), seed=4)
    frames, near = _dark_near_field(c, depth=0.35 * 140.0)
    moving = fan.temporal_std(Cine.from_array(frames).frames) > fan.DYNAMIC_STD
    assert not (moving & near).any()                               # nothing there to find the fan by
    r = fan.find_region(Cine.from_array(frames))
    assert r.source == "detected"
    fan_checks(r.mask, c.fan, c.furniture, min_dice=0.98)
    assert (r.mask & near).sum() >= 0.9 * near.sum()               # the apex wedge is back (was 0 before)
    assert (r.mask & ~c.fan).sum() <= 0.02 * c.fan.sum()


def test_the_apex_is_not_extended_over_screen_text():
    """Static bright pixels (a label written in the black near field) stop the extension: screen text
    never becomes fan, even if the apex stays cut."""
    from PIL import Image, ImageDraw

    c = make_screen_capture(n_frames=10, apex=(120, 20), radius=140.0, half_angle=35.0, size=(190, 260), seed=4)
    frames, near = _dark_near_field(c, depth=0.35 * 140.0)
    img = Image.new("L", frames.shape[2:0:-1])
    ImageDraw.Draw(img).text((112, 34), "TIS", fill=255)
    text = (np.asarray(img) > 0) & near
    assert text.any()
    frames[:, text] = 255
    r = fan.find_region(Cine.from_array(frames))
    assert r.source == "detected" and not (r.mask & text).any()


@pytest.mark.parametrize("seed,ranges", [(930002, "outside"), (940001, "outside_dark")])
def test_the_found_fan_stays_inside_what_the_scanner_imaged(seed, ranges):
    """Simulated screen captures (exact fan): the hull round a sector's arc, and a wedge added above the
    sector's small rounded top as if it were a dark near field's cut, took in 148 and 46 pixels outside
    the true fan (black on every frame), where a label could fall outside the fan. Now none."""
    import dataclasses

    from training.simulator.cache import RANGES
    from training.simulator.scene import sample_params, simulate
    from training.simulator.screen import render_screen

    sc = render_screen(simulate(dataclasses.replace(sample_params(seed, RANGES[ranges]), n_frames=16)), seed=seed)
    r = fan.find_region(Cine.from_array(sc.frames))
    assert r.source == "detected"
    assert int((r.mask & ~sc.fan).sum()) == 0
    assert dice(r.mask, sc.fan) >= 0.99
    assert ((sc.labels > 0) & ~r.mask).sum() <= 0.015 * (sc.labels > 0).sum()


def test_dicom_region_bounds_the_fan(cap, tmp_path):
    path = tmp_path / "screen.dcm"
    write_screen_dicom(cap, path, region="fan")
    c = read_cine(path)
    regions = c.metadata["us_regions"]
    assert [r["spatial_format"] for r in regions] == [1, 3]
    assert tuple(regions[0][k] for k in ("x0", "y0", "x1", "y1")) == cap.bbox
    r = fan.find_region(c)
    assert r.source == "dicom"
    fan_checks(r.mask, cap.fan, cap.furniture)
    x0, y0, x1, y1 = cap.bbox                              # nothing outside the DICOM region
    assert not r.mask[:y0].any() and not r.mask[y1 + 1:].any() and not r.mask[:, :x0].any()
    assert c.spacing == pytest.approx(cap.spacing)


def test_dicom_without_regions_is_detected(cap, tmp_path):
    path = tmp_path / "bare.dcm"
    write_screen_dicom(cap, path, region="none")
    c = read_cine(path)
    assert c.metadata["us_regions"] == []
    r = fan.find_region(c)
    assert r.source == "detected"
    fan_checks(r.mask, cap.fan, cap.furniture)


def test_dicom_region_without_a_moving_fan_is_the_box():
    """A DICOM region over a still image: the region box itself (coloured pixels excluded)."""
    frames = np.full((3, 40, 50, 3), 90, np.uint8)
    frames[:, 5:8, 5:8] = (255, 0, 0)
    c = Cine.from_array(frames, metadata={"us_regions": [{"x0": 2, "y0": 3, "x1": 40, "y1": 30, "spatial_format": 1}]})
    r = fan.find_region(c)
    assert r.source == "dicom" and r.bbox == (2, 3, 40, 30)
    assert r.mask.sum() == 39 * 28 - 9 and not r.mask[5:8, 5:8].any()


def test_crop_uncrop_round_trip_and_geometry(cap, rotated_geometry):
    """Off-centre fan: crop -> uncrop is exact on the fan, geometry and spacing kept, coordinates shifted."""
    c = Cine.from_array(cap.frames, ijk_to_ras=rotated_geometry, fps=25)
    r, cropped = fan.prepare_region(c)
    x0, y0, x1, y1 = r.bbox
    h, w = r.crop_shape
    assert cropped.shape == (c.n_frames, h, w) and (h, w) == (y1 - y0 + 1, x1 - x0 + 1)
    assert cropped.spacing == pytest.approx(c.spacing) and np.array_equal(cropped.frame_times, c.frame_times)
    for i, j in [(0, 0), (w - 1, h - 1), (7, 3)]:          # a crop pixel is the same point in patient space
        assert np.allclose(cropped.pixel_to_ras(i, j), c.pixel_to_ras(i + x0, j + y0))
    assert (cropped.frames[:, ~r.crop_mask] == 0).all()
    assert np.array_equal(cropped.frames[:, r.crop_mask], c.frames[:, y0:y1 + 1, x0:x1 + 1][:, r.crop_mask])
    labels = (cap.labels * r.mask).astype(np.uint8)
    back = r.uncrop(r.crop(labels))
    assert back.shape == labels.shape and back.dtype == labels.dtype and np.array_equal(back, labels)
    noisy = np.ones((c.n_frames, h, w), np.uint8) * 3      # a model labelling its whole input
    assert np.array_equal(r.uncrop(noisy) > 0, np.broadcast_to(r.mask, labels.shape))
    pts = np.array([[x0 + 5.5, y0 + 9.0], [x1, y1]])
    assert np.allclose(r.to_crop_xy(pts), [[5.5, 9.0], [w - 1, h - 1]]) and np.allclose(r.to_full_xy(r.to_crop_xy(pts)), pts)
    assert r.box_to_crop((x0 - 10, y0 + 2, x1 + 10, y1 + 50)) == (0.0, 2.0, w - 1.0, h - 1.0)
    with pytest.raises(EchoSAMError, match="do not match"):
        r.uncrop(labels)


def test_saved_region_is_reused_exactly(cap, tmp_path):
    c = Cine.from_array(cap.frames)
    r = fan.find_region(c)
    r.save(tmp_path)
    again = fan.FanRegion.load(tmp_path, r.summary(), c.shape[1:])
    assert np.array_equal(again.mask, r.mask) and again.bbox == r.bbox and again.source == r.source
    assert np.array_equal(again.crop_cine(c).frames, r.crop_cine(c).frames)
    with pytest.raises(EchoSAMError, match="give the cine"):
        fan.FanRegion.load(tmp_path, r.summary(), (10, 10))


def test_user_overrides(cap):
    c = Cine.from_array(cap.frames)
    r = fan.find_region(c, "10,20,100,90")
    assert r.source == "user" and r.bbox == (10, 20, 100, 90) and r.crop_shape == (71, 91) and r.crop_mask.all()
    assert fan.find_region(c, (10, 20, 100, 90)).bbox == r.bbox
    off, same = fan.prepare_region(c, "off")
    assert off.source == "none" and off.is_whole_frame and off.notice is None and same is c
    for bad in ("10,20,100", "a,b,c,d", "0,0,500,10", "30,5,10,40", "1.5,0,10,10"):
        with pytest.raises(EchoSAMError, match="region|Region"):
            fan.find_region(c, bad)


@pytest.mark.parametrize("kind", ["static noise", "black", "one frame"])
def test_no_fan_found_says_so_and_uses_the_whole_frame(kind):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (48, 64), dtype=np.uint8)
    frames = {"static noise": np.repeat(noise[None], 6, 0), "black": np.zeros((6, 48, 64), np.uint8),
              "one frame": noise[None]}[kind]
    c = Cine.from_array(frames)
    r, model_cine = fan.prepare_region(c)
    assert r.source == "none" and r.is_whole_frame and model_cine is c
    assert r.notice.startswith("no imaging fan found (") and "\n" not in r.notice
    assert r.summary()["fan_fraction"] == 1.0 and r.summary()["notice"] == r.notice


def test_moving_everywhere_is_one_whole_frame_fan():
    frames = np.random.default_rng(1).integers(0, 255, (5, 40, 40), dtype=np.uint8)
    r = fan.find_region(Cine.from_array(frames))
    assert r.source == "detected" and r.is_whole_frame


def test_real_apical_cine_of_pydicom_data(tmp_path):
    """The SonoSite cine of pydicom-data (RGB, JPEG baseline, 120 frames): the DICOM region and the
    detection from the pixels (with the region sequence removed) agree on the fan."""
    pytest.importorskip("pydicom.data")
    from pydicom.data import get_testdata_file
    try:
        src = get_testdata_file("color3d_jpeg_baseline.dcm")
    except Exception:                                      # pydicom-data absent and no download
        src = None
    if not src:
        pytest.skip("pydicom-data is not installed (pip install pydicom-data)")
    c = read_cine(src)
    assert c.n_frames == 120 and c.shape[1:] == (480, 640)
    r = fan.find_region(c)
    assert r.source == "dicom" and 0.30 <= r.fraction <= 0.40
    bx0, by0, bx1, by1 = r.bbox
    assert 80 <= bx0 <= 90 and 40 <= by0 <= 50 and bx1 <= 595 and 398 <= by1 <= 410
    c.metadata.pop("us_regions")
    d = fan.find_region(c)
    assert d.source == "detected" and dice(d.mask, r.mask) >= 0.98
    text = np.zeros(c.shape[1:], bool)                     # the scanner's text columns left and right
    text[:, :70] = text[:, 600:] = True
    text[420:] = True                                      # and the bottom tool bar
    assert not (d.mask & text).any() and not (d.mask & c.metadata["colour_pixels"]).any()


def test_two_fans_side_by_side_keep_the_largest_and_say_so():
    """A dual (or biplane) display: two moving sectors of like size. The larger is the fan, and the notice says
    that another was left out and how to choose it; a single fan says nothing."""
    a = make_screen_capture(n_frames=8, seed=1)
    b = make_screen_capture(n_frames=8, seed=2, apex=(120, 24), radius=110)
    frames = np.concatenate([a.frames, b.frames], axis=2)
    r = fan.find_region(Cine.from_array(frames))
    larger = np.concatenate([a.fan, np.zeros_like(b.fan)], axis=1)
    assert r.source == "detected" and dice(r.mask, larger) > 0.99
    assert r.notice.startswith("2 imaging fans side by side") and "--region" in r.notice
    assert fan.find_region(Cine.from_array(a.frames)).notice is None
