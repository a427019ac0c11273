"""Cine: shape rules, grey conversion, geometry, validation."""
import numpy as np
import pytest

from echosam.cine import Cine, geometry_matrix, rgb_to_grey
from echosam.errors import CineError


def test_grey_rule_is_bt601_luma():
    rgb = np.zeros((2, 16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[1, ..., 1] = 100
    grey = rgb_to_grey(rgb)
    assert grey.dtype == np.uint8
    assert grey[0, 0, 0] == round(0.299 * 200)
    assert grey[1, 0, 0] == round(0.299 * 200 + 0.587 * 100)


@pytest.mark.parametrize("shape,expected", [
    ((32, 40), (1, 32, 40)),            # one 2D image
    ((5, 32, 40), (5, 32, 40)),         # grey cine
    ((32, 40, 3), (1, 32, 40)),         # one RGB image
    ((5, 32, 40, 4), (5, 32, 40)),      # RGBA cine
    ((5, 1, 32, 40), (5, 32, 40)),      # one-slice frames as Slicer stores them
])
def test_accepted_shapes(shape, expected):
    a = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    c = Cine.from_array(a)
    assert c.shape == expected and c.frames.dtype == np.uint8
    if shape[-1] in (3, 4):                          # colour: BT.601 grey of the RGB channels (alpha ignored)
        want = rgb_to_grey(a[..., :3]).reshape(expected)
        assert not np.array_equal(rgb_to_grey(a[..., :3]), a[..., 0])     # the channels really differ
    else:                                            # grey: the same pixels in the same order
        want = a.reshape(expected)
    np.testing.assert_array_equal(c.frames, want)


def test_3d_volume_is_rejected_with_advice():
    with pytest.raises(CineError, match="3D"):
        Cine.from_array(np.ones((5, 4, 32, 40), np.uint8))


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 32, 32)), "empty"),
    (np.zeros((3, 4, 4)), "too small"),
    (np.full((3, 16, 16), np.nan, np.float32), "NaN"),
])
def test_bad_arrays(bad, match):
    with pytest.raises(CineError, match=match):
        Cine.from_array(bad)


def test_nan_in_one_frame_names_the_frame():
    a = np.zeros((4, 16, 16), np.float32)
    a[2, 3, 3] = np.inf
    with pytest.raises(CineError, match="frame 2"):
        Cine.from_array(a)


def test_geometry_spacing_and_pixel_mapping():
    theta = np.deg2rad(30)
    d = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    c = Cine.from_array(np.zeros((3, 20, 30), np.uint8), spacing=(0.5, 0.25), origin=(10, -5, 2), directions=d,
                        frame_times=[0.0, 0.02, 0.04])
    assert c.spacing == pytest.approx((0.5, 0.25))
    assert c.pixel_area_mm2 == pytest.approx(0.125)
    assert c.fps == pytest.approx(50.0)
    x, y = c.ras_to_pixel(c.pixel_to_ras(7, 11))
    assert (x, y) == pytest.approx((7, 11))
    assert np.allclose(c.pixel_to_ras(0, 0), [10, -5, 2])


def test_frame_times_must_increase():
    with pytest.raises(CineError, match="increasing"):
        Cine.from_array(np.zeros((3, 16, 16)), frame_times=[0, 0.1, 0.1])
    with pytest.raises(CineError, match="spacing"):
        geometry_matrix((0.0, 1.0))
