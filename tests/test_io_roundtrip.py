"""Write-then-read round trips for every cine and label format, on a rotated, anisotropic,
off-origin geometry with uneven frame times, so that geometry and timing bugs show."""
from __future__ import annotations

import json

import numpy as np
import pytest

from echosam.cine import Cine
from echosam.errors import CineError
from echosam.io import read_cine, read_labels, render_overlay, write_cine, write_labels, write_overlay
from echosam.structures import STRUCTURES

T, H, W = 7, 24, 18      # H != W so a transposed axis cannot pass
UNEVEN = np.array([0.1, 0.12, 0.145, 0.17, 0.19, 0.215, 0.24])

# format -> (exact pixels, geometry tolerance, time tolerance, keeps uneven times)
# NIfTI stores geometry and pixdim as float32; DICOM stores directions as 16-character decimals.
FORMATS = {
    "x.seq.nrrd": (True, 0.0, 0.0, True),
    "x.nrrd": (True, 0.0, 0.0, True),
    "x.nhdr": (True, 0.0, 0.0, True),
    "x.nii.gz": (True, 2e-6, 1e-7, False),
    "x.nii": (True, 2e-6, 1e-7, False),
    "x.dcm": (True, 1e-12, 1e-12, True),
    "x.avi": (True, 0.0, 0.0, True),
    "frames_png": (True, 0.0, 0.0, True),
}


def _cine(geometry, dtype=np.uint8, times=UNEVEN) -> Cine:
    rng = np.random.default_rng(7)
    top = 255 if dtype == np.uint8 else 4000
    frames = rng.integers(0, top + 1, (T, H, W)).astype(dtype)
    return Cine.from_array(frames, ijk_to_ras=geometry, frame_times=times, name="rt")


@pytest.mark.parametrize("name", list(FORMATS))
def test_cine_round_trip(tmp_path, rotated_geometry, name):
    exact, geo_tol, t_tol, uneven_ok = FORMATS[name]
    times = UNEVEN if uneven_ok else 0.1 + np.arange(T) * 0.04
    cine = _cine(rotated_geometry, times=times)
    path = write_cine(cine, tmp_path / name)
    back = read_cine(path)
    assert back.frames.shape == (T, H, W) and back.frames.dtype == np.uint8
    np.testing.assert_array_equal(back.frames, cine.frames)
    np.testing.assert_allclose(back.ijk_to_ras, rotated_geometry, rtol=0, atol=geo_tol * 20 + 1e-15)
    np.testing.assert_allclose(back.spacing, (0.25, 0.3), rtol=0, atol=geo_tol + 1e-15)
    np.testing.assert_allclose(back.frame_times, times, rtol=0, atol=t_tol + 1e-15)
    assert back.metadata["timing"] == "file"
    # nothing but the output (and an .nhdr's data file) is left in the folder: no temp files
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([name] + (["x.raw.gz"] if name.endswith(".nhdr") else []))


@pytest.mark.parametrize("name", ["x.seq.nrrd", "x.nii.gz", "x.dcm", "frames_png"])
def test_uint16_round_trip(tmp_path, rotated_geometry, name):
    cine = _cine(rotated_geometry, dtype=np.uint16, times=0.05 * np.arange(T))
    back = read_cine(write_cine(cine, tmp_path / name))
    assert back.frames.dtype == np.uint16
    np.testing.assert_array_equal(back.frames, cine.frames)


def test_mp4_is_close_and_keeps_size_rate_geometry(tmp_path, rotated_geometry):
    """H.264 is lossy: EchoNet-like 112x112 smooth frames come back close; odd sizes are padded
    for yuv420p and cropped back from the stored geometry record."""
    yy, xx = np.mgrid[0:111, 0:112]
    frames = np.stack([(127 + 100 * np.sin(xx / 9.0 + t / 3.0) * np.cos(yy / 13.0)) for t in range(10)])
    cine = Cine.from_array(frames.astype(np.uint8), ijk_to_ras=rotated_geometry, fps=50.0)
    back = read_cine(write_cine(cine, tmp_path / "echonet.mp4"))
    assert back.frames.shape == (10, 111, 112)
    assert back.fps == pytest.approx(50.0)
    assert np.abs(back.frames.astype(int) - cine.frames).mean() < 2.0
    np.testing.assert_array_equal(back.ijk_to_ras, rotated_geometry)


def test_foreign_rgb_video_reads_as_grey_without_spacing(tmp_path):
    """An RGB AVI written without our geometry record (as EchoNet's are): grey by BT.601, 1 mm, its fps."""
    from echosam.cine import rgb_to_grey
    from echosam.io.video_io import write_video

    rgb = np.random.default_rng(1).integers(0, 256, (5, 16, 20, 3)).astype(np.uint8)
    write_video(rgb, tmp_path / "clip.avi", 25.0, ".avi")        # FFV1 bgr0: lossless RGB
    back = read_cine(tmp_path / "clip.avi")
    np.testing.assert_array_equal(back.frames, rgb_to_grey(rgb))
    assert back.spacing == (1.0, 1.0) and back.metadata["spacing_known"] is False
    np.testing.assert_allclose(back.frame_times, np.arange(5) / 25.0)


def test_fps_argument_overrides_file_timing(tmp_path, rotated_geometry):
    path = write_cine(_cine(rotated_geometry), tmp_path / "x.seq.nrrd")
    back = read_cine(path, fps=20.0)
    np.testing.assert_allclose(back.frame_times, np.arange(T) / 20.0)
    assert back.metadata["timing"] == "given"
    with pytest.raises(CineError, match="positive"):
        read_cine(path, fps=-3)


@pytest.mark.parametrize("name", ["l.seq.nrrd", "l.nrrd", "l.nhdr", "l.nii.gz"])
def test_labels_round_trip(tmp_path, rotated_geometry, name):
    cine = _cine(rotated_geometry, times=0.1 + 0.04 * np.arange(T))
    labels = (cine.frames % 4).astype(np.uint8)
    write_labels(labels, cine, tmp_path / name)
    back, geo = read_labels(tmp_path / name)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    np.testing.assert_allclose(geo.ijk_to_ras, rotated_geometry, atol=4e-6 if "nii" in name else 1e-15)
    np.testing.assert_allclose(geo.frame_times, cine.frame_times, atol=1e-7)
    if "nii" not in name:
        named = {s["id"]: s for s in geo.metadata["structures"]}
        assert set(named) == {"LV_endo", "LV_myo", "LA"}
        assert named["LV_myo"]["label"] == 2 and named["LV_myo"]["color"] == list(STRUCTURES["myo"].color)


def test_labels_must_match_the_cine(tmp_path, rotated_geometry):
    cine = _cine(rotated_geometry)
    with pytest.raises(CineError, match="do not match"):
        write_labels(np.zeros((T, H, W + 1), np.uint8), cine, tmp_path / "l.seq.nrrd")
    with pytest.raises(CineError, match="cannot be written"):
        write_labels(np.zeros((T, H, W), np.uint8), cine, tmp_path / "l.avi")
    assert list(tmp_path.iterdir()) == []


def test_overlay_colours_and_formats(tmp_path, small_phantom):
    ph = small_phantom
    rgb = render_overlay(ph.cine, ph.labels)
    assert rgb.shape == ph.labels.shape + (3,) and rgb.dtype == np.uint8
    lv = ph.labels == 1
    interior = lv & np.roll(lv, 1, 1) & np.roll(lv, -1, 1) & np.roll(lv, 1, 2) & np.roll(lv, -1, 2)
    edge = lv & ~interior
    red = np.rint(255 * np.array(STRUCTURES["lv"].color)).astype(np.uint8)
    assert (rgb[edge] == red).all()                         # opaque contour in the LV colour
    grey = ph.cine.frames[interior].astype(float)
    expected_r = np.rint(0.65 * grey + 0.35 * 255 * STRUCTURES["lv"].color[0])
    np.testing.assert_array_equal(rgb[interior][:, 0], expected_r)    # translucent fill
    bg = ph.labels == 0
    assert (rgb[bg][:, 0] == ph.cine.frames[bg]).all()      # background stays grey
    write_overlay(ph.cine, ph.labels, tmp_path / "o.avi", fps=10)
    back = read_cine(tmp_path / "o.avi")                   # FFV1 is lossless: luma of the overlay
    from echosam.cine import rgb_to_grey
    np.testing.assert_array_equal(back.frames, rgb_to_grey(rgb))
    assert back.fps == pytest.approx(10.0)
    for name in ("o.mp4", "o.gif"):
        write_overlay(ph.cine, ph.labels, tmp_path / name)
        assert (tmp_path / name).stat().st_size > 1000
    import imageio.v3 as iio
    gif = iio.imread(tmp_path / "o.gif", index=None)
    assert gif.shape[:3] == ph.labels.shape
    with pytest.raises(CineError, match="Overlay videos"):
        write_overlay(ph.cine, ph.labels, tmp_path / "o.nrrd")


def test_png_folder_without_sidecar_and_natural_order(tmp_path):
    from PIL import Image

    frames = [np.full((10, 12), v, np.uint8) for v in (5, 6, 7)]
    for name, f in zip(("f2.png", "f10.png", "f1.png"), (frames[1], frames[2], frames[0])):
        Image.fromarray(f).save(tmp_path / name)
    back = read_cine(tmp_path)
    assert [int(f[0, 0]) for f in back.frames] == [5, 6, 7]
    assert back.metadata["timing"] == "default" and back.spacing == (1.0, 1.0)
    (tmp_path / "cine.json").write_text(json.dumps({"spacing_mm": [0.4, 0.5], "fps": 25}))
    back = read_cine(tmp_path)
    assert back.spacing == (0.4, 0.5) and back.fps == pytest.approx(25.0)


def test_rewriting_a_png_folder_replaces_it(tmp_path, rotated_geometry):
    out = tmp_path / "frames"
    write_cine(_cine(rotated_geometry), out)
    short = Cine.from_array(np.zeros((2, 9, 9), np.uint8), spacing=(0.5, 0.5))
    write_cine(short, out)
    assert sorted(p.name for p in out.iterdir()) == ["cine.json", "frame_0000.png", "frame_0001.png"]
    assert read_cine(out).n_frames == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
