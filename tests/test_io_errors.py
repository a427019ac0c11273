"""Bad input gives a CineError that says what is wrong, and writers leave nothing behind."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from echosam.cine import Cine
from echosam.errors import CineError
from echosam.io import read_cine, write_cine
from echosam.io.atomic import atomic_file, atomic_folder


def _cine(geometry=None, t=5):
    frames = np.random.default_rng(3).integers(0, 256, (t, 16, 12)).astype(np.uint8)
    return Cine.from_array(frames, ijk_to_ras=geometry, fps=25.0)


def _write_nrrd(path, data, header):
    import nrrd

    nrrd.write(str(path), data, header, index_order="C")


def test_missing_empty_and_unknown(tmp_path):
    with pytest.raises(CineError, match="does not exist"):
        read_cine(tmp_path / "nope.seq.nrrd")
    (tmp_path / "empty.nrrd").write_bytes(b"")
    with pytest.raises(CineError, match="empty"):
        read_cine(tmp_path / "empty.nrrd")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(CineError, match="Unknown cine format.*Supported: .seq.nrrd"):
        read_cine(tmp_path / "notes.txt")
    (tmp_path / "no_extension").write_bytes(b"\0" * 200)
    with pytest.raises(CineError, match="Unknown cine format"):
        read_cine(tmp_path / "no_extension")
    with pytest.raises(CineError, match="unknown output format"):
        write_cine(_cine(), tmp_path / "out.xyz")
    with pytest.raises(CineError, match="overlay"):
        write_cine(_cine(), tmp_path / "out.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.nrrd", "no_extension", "notes.txt"]


@pytest.mark.parametrize("name", ["t.seq.nrrd", "t.nii.gz", "t.nii", "t.dcm", "t.avi", "t.mp4"])
def test_truncated_files(tmp_path, rotated_geometry, name):
    path = write_cine(_cine(rotated_geometry, t=6), tmp_path / name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CineError, match=r"truncated|holds no|decod"):
        read_cine(path)


def test_raw_nrrd_with_missing_bytes(tmp_path):
    hdr = {"type": "uint8", "dimension": 3, "encoding": "raw", "space": "left-posterior-superior",
           "space directions": np.eye(3), "kinds": ["domain", "domain", "domain"]}
    _write_nrrd(tmp_path / "v.nrrd", np.zeros((1, 16, 16), np.uint8), hdr)
    data = (tmp_path / "v.nrrd").read_bytes()
    (tmp_path / "v.nrrd").write_bytes(data[:-100])
    with pytest.raises(CineError, match="v.nrrd"):
        read_cine(tmp_path / "v.nrrd")


def test_nan_frames(tmp_path):
    data = np.zeros((4, 1, 10, 10), np.float32)
    data[2, 0, 3, 3] = np.nan
    hdr = {"dimension": 4, "space": "left-posterior-superior", "kinds": ["domain", "domain", "domain", "list"],
           "space directions": np.vstack([np.eye(3), [np.nan] * 3]), "encoding": "gzip"}
    _write_nrrd(tmp_path / "nan.seq.nrrd", data, hdr)
    with pytest.raises(CineError, match=r"NaN or infinite.*frame 2"):
        read_cine(tmp_path / "nan.seq.nrrd")


def test_3d_nrrd_volume_needs_slices_as_frames(tmp_path):
    vol = np.arange(6 * 10 * 12, dtype=np.int16).reshape(6, 10, 12)      # (K, J, I)
    hdr = {"space": "left-posterior-superior", "kinds": ["domain"] * 3, "encoding": "gzip",
           "space directions": np.diag([0.5, 0.6, 2.0]), "space origin": np.array([1.0, 2.0, 3.0])}
    _write_nrrd(tmp_path / "vol.nrrd", vol, hdr)
    with pytest.raises(CineError, match="3D volume with 6 slices.*slices_as_frames=True.*--slices-as-frames"):
        read_cine(tmp_path / "vol.nrrd")
    cine = read_cine(tmp_path / "vol.nrrd", slices_as_frames=True)
    np.testing.assert_array_equal(cine.frames, vol)
    assert cine.spacing == pytest.approx((0.6, 0.5))
    np.testing.assert_allclose(cine.ijk_to_ras[:3, 3], [-1.0, -2.0, 3.0])     # LPS origin -> RAS
    # one slice is a single frame, not a volume
    _write_nrrd(tmp_path / "one.nrrd", vol[:1], hdr)
    assert read_cine(tmp_path / "one.nrrd").n_frames == 1


def test_3d_plus_t_nrrd_is_refused(tmp_path):
    hdr = {"space": "left-posterior-superior", "kinds": ["domain", "domain", "domain", "list"],
           "space directions": np.vstack([np.eye(3), [np.nan] * 3]), "encoding": "gzip"}
    _write_nrrd(tmp_path / "v4.seq.nrrd", np.zeros((3, 4, 10, 10), np.uint8), hdr)
    with pytest.raises(CineError, match="3D\\+t"):
        read_cine(tmp_path / "v4.seq.nrrd")


def test_old_slicer_layout_with_list_axis_first(tmp_path):
    """Older Slicer files: kinds 'list domain domain domain' and 'axis 0 index values' in ms."""
    frames = np.random.default_rng(0).integers(0, 255, (3, 1, 10, 12)).astype(np.uint8)   # (T, K, J, I)
    hdr = {"space": "left-posterior-superior", "kinds": ["domain", "domain", "domain", "list"][::-1],
           "space directions": np.vstack([[np.nan] * 3, np.diag([0.4, 0.5, 1.0])]), "encoding": "gzip",
           "units": ["ms", "", "", ""], "axis 0 index values": "0 40 80"}
    _write_nrrd(tmp_path / "old.seq.nrrd", np.ascontiguousarray(np.moveaxis(frames, 0, -1)), hdr)
    cine = read_cine(tmp_path / "old.seq.nrrd")
    np.testing.assert_array_equal(cine.frames, frames[:, 0])
    np.testing.assert_allclose(cine.frame_times, [0.0, 0.04, 0.08])
    assert cine.spacing == pytest.approx((0.5, 0.4))


def test_nifti_3d_rules(tmp_path):
    """A 3D NIfTI is a volume unless slices_as_frames or CAMUS *_sequence naming says time."""
    import SimpleITK as sitk

    arr = np.random.default_rng(2).integers(0, 255, (9, 20, 16)).astype(np.uint8)    # (T, H, W)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.3, 0.2, 1.0))
    for name in ("vol.nii.gz", "patient0001_4CH_half_sequence.nii.gz"):
        sitk.WriteImage(img, str(tmp_path / name))
    gt = sitk.GetImageFromArray(arr % 4)                            # a label map holds 0..3 only
    gt.SetSpacing((0.3, 0.2, 1.0))
    sitk.WriteImage(gt, str(tmp_path / "patient0001_4CH_half_sequence_gt.nii.gz"))
    with pytest.raises(CineError, match="3D volume with 9 slices.*--slices-as-frames"):
        read_cine(tmp_path / "vol.nii.gz")
    vol = read_cine(tmp_path / "vol.nii.gz", slices_as_frames=True, fps=50)
    camus = read_cine(tmp_path / "patient0001_4CH_half_sequence.nii.gz", fps=50)
    for c in (vol, camus):
        np.testing.assert_array_equal(c.frames, arr)
        assert c.spacing == pytest.approx((0.2, 0.3)) and c.fps == pytest.approx(50)
    from echosam.io import read_labels
    lab, geo = read_labels(tmp_path / "patient0001_4CH_half_sequence_gt.nii.gz")
    np.testing.assert_array_equal(lab, arr % 4)                   # CAMUS *_gt naming: slices are frames
    assert lab.dtype == np.uint8 and geo.spacing == pytest.approx((0.2, 0.3))


def test_dicom_without_pixels(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"    # Comprehensive SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "SR", "x"
    ds.save_as(str(tmp_path / "report.dcm"), enforce_file_format=True)
    with pytest.raises(CineError, match="holds no image.*Comprehensive SR"):
        read_cine(tmp_path / "report.dcm")
    (tmp_path / "report.dcm").rename(tmp_path / "IM0001")           # extension-less: found by DICM
    with pytest.raises(CineError, match="holds no image"):
        read_cine(tmp_path / "IM0001")


def test_non_nrrd_bytes_with_nrrd_extension(tmp_path):
    (tmp_path / "fake.seq.nrrd").write_bytes(gzip.compress(b"hello"))
    with pytest.raises(CineError, match="fake.seq.nrrd as seq.nrrd"):
        read_cine(tmp_path / "fake.seq.nrrd")


def test_atomic_file_keeps_old_content_on_error(tmp_path):
    dest = tmp_path / "out.seq.nrrd"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(dest, suffix=".seq.nrrd") as tmp:
            tmp.write_bytes(b"half written")
            raise RuntimeError("disk full")
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.seq.nrrd"]


def test_atomic_folder_keeps_old_folder_on_error(tmp_path):
    dest = tmp_path / "frames"
    dest.mkdir()
    (dest / "frame_0000.png").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_folder(dest) as tmp:
            (tmp / "frame_0000.png").write_bytes(b"new")
            raise RuntimeError("interrupted")
    assert (dest / "frame_0000.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_writer_refuses_a_folder_as_file(tmp_path):
    (tmp_path / "x.seq.nrrd").mkdir()
    with pytest.raises(CineError, match="existing folder"):
        write_cine(_cine(), tmp_path / "x.seq.nrrd")
