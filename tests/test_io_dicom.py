"""DICOM ultrasound multi-frame: header content, RGB, compressed transfer syntaxes, foreign files."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from echosam.cine import Cine, rgb_to_grey
from echosam.io import read_cine, write_cine
from echosam.io.dicom_io import US_MULTIFRAME, write_dicom_frames


def _frames(t=6, h=20, w=14, seed=0):
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 80 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    noise = np.random.default_rng(seed).integers(-10, 11, (t, h, w))
    return np.clip(base[None] + noise + 5 * np.arange(t)[:, None, None], 0, 255).astype(np.uint8)


def test_header_is_us_multiframe(tmp_path, rotated_geometry):
    cine = Cine.from_array(_frames(), ijk_to_ras=rotated_geometry, fps=40.0)
    write_cine(cine, tmp_path / "us.dcm")
    ds = pydicom.dcmread(tmp_path / "us.dcm")
    assert ds.SOPClassUID == US_MULTIFRAME and ds.Modality == "US"
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (20, 14, 6)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsAllocated == 8
    assert float(ds.FrameTime) == pytest.approx(25.0) and ds.FrameIncrementPointer == 0x00181063
    region = ds.SequenceOfUltrasoundRegions[0]
    assert region.PhysicalUnitsXDirection == 3 and region.PhysicalDeltaX == pytest.approx(0.03)
    assert region.PhysicalDeltaY == pytest.approx(0.025)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.25, 0.3])


def test_rgb_file_reads_as_luma(tmp_path, rotated_geometry):
    rgb = np.random.default_rng(4).integers(0, 256, (4, 12, 10, 3)).astype(np.uint8)
    write_dicom_frames(rgb, tmp_path / "rgb.dcm", rotated_geometry, np.arange(4) * 0.02)
    ds = pydicom.dcmread(tmp_path / "rgb.dcm")
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
    cine = read_cine(tmp_path / "rgb.dcm")
    np.testing.assert_array_equal(cine.frames, rgb_to_grey(rgb))
    np.testing.assert_allclose(cine.ijk_to_ras, rotated_geometry, atol=1e-12)


def test_rle_compressed_round_trip_is_exact(tmp_path, rotated_geometry):
    from pydicom.uid import RLELossless

    cine = Cine.from_array(_frames(), ijk_to_ras=rotated_geometry, fps=30.0)
    write_cine(cine, tmp_path / "plain.dcm")
    ds = pydicom.dcmread(tmp_path / "plain.dcm")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert pydicom.dcmread(tmp_path / "rle.dcm").file_meta.TransferSyntaxUID == RLELossless
    back = read_cine(tmp_path / "rle.dcm")
    np.testing.assert_array_equal(back.frames, cine.frames)
    assert back.fps == pytest.approx(30.0)


def test_jpeg_baseline_file_decodes_close(tmp_path, rotated_geometry):
    """JPEG baseline frames (encoded with Pillow, encapsulated with pydicom) decode through pydicom's
    pixel-data handlers (pylibjpeg or Pillow)."""
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    frames = _frames(t=5, h=32, w=24)
    write_dicom_frames(frames, tmp_path / "plain.dcm", rotated_geometry, np.arange(5) / 25.0)
    ds = pydicom.dcmread(tmp_path / "plain.dcm")
    encoded = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=95)
        encoded.append(buf.getvalue())
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(tmp_path / "IMG0001", enforce_file_format=True)       # extension-less, found by DICM
    back = read_cine(tmp_path / "IMG0001")
    assert back.frames.shape == frames.shape and back.metadata["format"] == "dicom"
    assert np.abs(back.frames.astype(int) - frames).mean() < 2.0
    assert back.fps == pytest.approx(25.0)


def test_uneven_frame_times_and_start(tmp_path, rotated_geometry):
    times = np.array([0.5, 0.52, 0.55, 0.57, 0.61, 0.62])
    cine = Cine.from_array(_frames(), ijk_to_ras=rotated_geometry, frame_times=times)
    write_cine(cine, tmp_path / "v.dcm")
    ds = pydicom.dcmread(tmp_path / "v.dcm")
    assert ds.FrameIncrementPointer == 0x00181065 and len(ds.FrameTimeVector) == 6
    np.testing.assert_allclose(read_cine(tmp_path / "v.dcm").frame_times, times, atol=1e-12)


def test_scanner_style_file_without_plane_geometry(tmp_path):
    """Scanners write regions but no ImageOrientation/Position: spacing from the regions, LPS identity."""
    cine = Cine.from_array(_frames(), spacing=(0.25, 0.3), fps=30.0)
    write_cine(cine, tmp_path / "s.dcm")
    ds = pydicom.dcmread(tmp_path / "s.dcm")
    del ds.ImageOrientationPatient, ds.ImagePositionPatient, ds.PixelSpacing
    ds.save_as(tmp_path / "s.dcm")
    back = read_cine(tmp_path / "s.dcm")
    assert back.spacing == pytest.approx((0.25, 0.3))
    np.testing.assert_allclose(back.ijk_to_ras[:3, :3], np.diag([-0.3, -0.25, 1.0]))
    del ds.SequenceOfUltrasoundRegions, ds.FrameTime
    ds.save_as(tmp_path / "bare.dcm")
    bare = read_cine(tmp_path / "bare.dcm")
    assert bare.metadata["spacing_known"] is False and bare.spacing == (1.0, 1.0)
    assert bare.fps == pytest.approx(30.0)             # from CineRate


def test_spacing_comes_from_the_2d_region_not_a_doppler_strip(tmp_path):
    from pydicom.dataset import Dataset

    cine = Cine.from_array(_frames(), spacing=(0.25, 0.3), fps=30.0)
    write_cine(cine, tmp_path / "us.dcm")
    ds = pydicom.dcmread(tmp_path / "us.dcm")
    del ds.ImageOrientationPatient, ds.ImagePositionPatient, ds.PixelSpacing   # as most scanners write US
    doppler = Dataset()
    doppler.RegionSpatialFormat = 3                    # spectral Doppler strip: cm/s by seconds
    doppler.PhysicalUnitsXDirection = 3
    doppler.PhysicalUnitsYDirection = 3
    doppler.PhysicalDeltaX = 0.5
    doppler.PhysicalDeltaY = 0.7
    b_mode = ds.SequenceOfUltrasoundRegions[0]
    b_mode.RegionSpatialFormat = 1
    ds.SequenceOfUltrasoundRegions = [doppler, b_mode]
    ds.save_as(tmp_path / "two_regions.dcm")
    assert read_cine(tmp_path / "two_regions.dcm").spacing == pytest.approx((0.25, 0.3))
