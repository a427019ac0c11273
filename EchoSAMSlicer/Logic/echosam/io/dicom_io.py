"""DICOM ultrasound multi-frame (`.dcm`, or any file with the ``DICM`` preamble) through pydicom.

Writing: Ultrasound Multi-frame Image Storage (SOP class 1.2.840.10008.5.1.4.1.1.3.1),
explicit VR little endian, MONOCHROME2 (8 bits for uint8 cines, 16 bits for uint16/int16; float
cines are min-max scaled to 8 bits) or RGB (`write_dicom_frames` with (T, H, W, 3) uint8).
Timing: ``FrameTime`` (ms) for even frame times or ``FrameTimeVector`` (ms between frames) for
uneven ones, ``FrameDelay`` = first frame time (ms), ``CineRate``. Spacing: one
``SequenceOfUltrasoundRegions`` item covering the image with ``PhysicalDeltaX/Y`` in cm (FD, so
the spacing is exact) and ``PixelSpacing`` (row, col) mm. The plane geometry also goes into
``ImageOrientationPatient``/``ImagePositionPatient`` (LPS, DS: 16 characters, so about 1e-14
relative error) so that our own files round-trip the full IJK-to-RAS matrix; scanners rarely
write them for US, and then the geometry is the spacing with identity directions.

Reading keeps the ultrasound regions (``SequenceOfUltrasoundRegions``) in
``metadata["us_regions"]``: one dict per item with ``x0, y0, x1, y1`` (RegionLocationMin/Max, pixel
indices, inclusive), ``spatial_format`` (1 = 2D B-mode, 2 = M-mode, 3 = spectral, ...), ``data_type``
and ``flags``; `echosam.fan` takes the imaging fan's bounds from the 2D one.

Reading accepts every transfer syntax pydicom can decode (JPEG baseline/lossless through
pylibjpeg, RLE natively, ...); YBR colour is converted to RGB by pydicom, then to grey (BT.601).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import CineError
from .common import RawCine, lps_matrix, ras_matrix, to_uint8

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
CM_UNITS = 3   # PhysicalUnitsX/YDirection code for cm


def _ds(values) -> list[str]:
    from pydicom.valuerep import format_number_as_ds

    return [format_number_as_ds(float(v)) for v in values]


def write_dicom_frames(frames: np.ndarray, tmp: Path, ijk_to_ras: np.ndarray, frame_times: np.ndarray,
                       name: str = "cine") -> None:
    """Write (T, H, W) grey (uint8/uint16/int16) or (T, H, W, 3) uint8 RGB frames as one US
    multi-frame file at ``tmp``, with the geometry (4x4 IJK-to-RAS, mm) and frame times (s)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    a = np.asarray(frames)
    rgb = a.ndim == 4
    if rgb and (a.shape[-1] != 3 or a.dtype != np.uint8):
        raise CineError(f"RGB DICOM frames must be (T, H, W, 3) uint8, got {a.shape} {a.dtype}.")
    if not rgb and a.dtype not in (np.uint8, np.uint16, np.int16):
        a = to_uint8(a)
    t, h, w = a.shape[:3]
    m = np.asarray(ijk_to_ras, dtype=float)
    lps = lps_matrix(m)
    col_mm, row_mm = float(np.linalg.norm(m[:3, 0])), float(np.linalg.norm(m[:3, 1]))
    times = np.asarray(frame_times, dtype=float)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = US_MULTIFRAME, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "US", "Anonymous", "echosam"
    ds.SeriesDescription = str(name)[:64]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.InstanceNumber, ds.SeriesNumber = 1, 1
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, t
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    bits = a.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if a.dtype == np.int16 else 0
    steps = np.diff(times) * 1000.0
    if t > 1 and np.allclose(steps, steps[0], rtol=0, atol=1e-9):
        ds.FrameTime = _ds([steps[0]])[0]
        ds.FrameIncrementPointer = 0x00181063
    else:
        ds.FrameTimeVector = _ds(np.concatenate([[0.0], steps]))
        ds.FrameIncrementPointer = 0x00181065
    ds.FrameDelay = _ds([times[0] * 1000.0])[0]
    if t > 1:
        ds.CineRate = max(1, int(round(1.0 / float(np.median(np.diff(times))))))
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = w - 1, h - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = CM_UNITS
    region.PhysicalDeltaX, region.PhysicalDeltaY = col_mm / 10.0, row_mm / 10.0
    ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelSpacing = _ds([row_mm, col_mm])
    ds.ImageOrientationPatient = _ds(np.concatenate([lps[:3, 0] / col_mm, lps[:3, 1] / row_mm]))
    ds.ImagePositionPatient = _ds(lps[:3, 3])
    ds.PixelData = np.ascontiguousarray(a).tobytes()
    ds.save_as(str(tmp), enforce_file_format=True)


def write_dicom(cine: Cine, tmp: Path) -> None:
    """Write a grey cine as a US multi-frame DICOM file at ``tmp``."""
    write_dicom_frames(cine.frames, tmp, cine.ijk_to_ras, cine.frame_times, cine.name)


def _spacing(ds) -> tuple[float, float] | None:
    regions = list(ds.get("SequenceOfUltrasoundRegions", []) or [])
    # the 2D B-mode region (RegionSpatialFormat 1) first: Doppler/M-mode strips have other scales
    regions.sort(key=lambda r: r.get("RegionSpatialFormat", 0) != 1)
    for region in regions:
        if region.get("PhysicalUnitsXDirection") == CM_UNITS and region.get("PhysicalUnitsYDirection") == CM_UNITS:
            return float(region.PhysicalDeltaY) * 10.0, float(region.PhysicalDeltaX) * 10.0
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        if key in ds and len(ds[key].value) == 2:
            return float(ds[key].value[0]), float(ds[key].value[1])
    return None


def _regions(ds) -> list[dict]:
    """The ultrasound regions' bounds as plain dicts (see the module docstring); [] when absent."""
    out = []
    for r in list(ds.get("SequenceOfUltrasoundRegions", []) or []):
        try:
            box = [int(r.get(k)) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                           "RegionLocationMaxX1", "RegionLocationMaxY1")]
        except (TypeError, ValueError):
            continue                                    # an item without its location: unusable
        out.append(dict(zip(("x0", "y0", "x1", "y1"), box), spatial_format=int(r.get("RegionSpatialFormat", 0) or 0),
                        data_type=int(r.get("RegionDataType", 0) or 0), flags=int(r.get("RegionFlags", 0) or 0)))
    return out


def _times(ds, n: int) -> np.ndarray | None:
    t0 = float(ds.get("FrameDelay", 0.0) or 0.0) / 1000.0
    vec = ds.get("FrameTimeVector")
    if vec is not None and len(vec) == n:
        return t0 + np.cumsum(np.asarray([float(v) for v in vec])) / 1000.0 - float(vec[0]) / 1000.0
    ft = ds.get("FrameTime")
    if ft is not None and float(ft) > 0:
        return t0 + np.arange(n) * float(ft) / 1000.0
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = ds.get(key)
        if rate is not None and float(rate) > 0:
            return t0 + np.arange(n) / float(rate)
    return None


def _has_preamble(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_pixel_bytes(ds, path: Path) -> None:
    """Declared pixel size against the size limit (before decoding), and native pixel data against it."""
    from .limits import check_bytes

    n = int(ds.get("NumberOfFrames", 1) or 1)
    declared = (int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * n * int(ds.get("SamplesPerPixel", 1) or 1)
                * max(1, int(ds.get("BitsAllocated", 8) or 8) // 8))
    check_bytes(declared, path.name)
    ts = ds.file_meta.get("TransferSyntaxUID") if "file_meta" in dir(ds) else None
    if ts is not None and not getattr(ts, "is_compressed", False):
        stored = len(ds.PixelData)
        if stored < declared:
            raise CineError(f"{path.name} is truncated: {stored} of {declared} bytes of pixel data. "
                            "Copy or export it again.")


def read_dicom(path: Path, slices_as_frames: bool = False) -> RawCine:
    """Read a (multi-frame) DICOM image into (T, H, W[, 3]) frames with spacing, geometry, times."""
    import pydicom

    with warnings.catch_warnings():            # pydicom warns about every oddity; the errors below say what matters
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(str(path))
        except Exception as exc:               # struct.error, EOFError, InvalidDicomError... on a cut file
            if path.stat().st_size < 132 or _has_preamble(path):
                raise CineError(f"{path.name} is truncated or damaged: it ends inside its DICOM header "
                                f"({_first_line(exc)}). Copy or export it again.") from None
            raise
        if "PixelData" not in ds:
            if "Rows" in ds or "SOPClassUID" not in ds or "Image" in getattr(ds.get("SOPClassUID"), "name", ""):
                raise CineError(f"{path.name} is truncated: it ends before its pixel data. Copy or export it again.")
            kind = ds.get("SOPClassUID")
            what = getattr(kind, "name", None) or str(kind or "unknown SOP class")
            raise CineError(f"This DICOM file holds no image ({what}); choose the ultrasound cine file of the series.")
        _check_pixel_bytes(ds, path)
        try:
            arr = ds.pixel_array
        except (RuntimeError, NotImplementedError) as exc:
            ts = ds.file_meta.get("TransferSyntaxUID", "unknown")
            raise CineError(f"Cannot decode DICOM pixel data (transfer syntax {getattr(ts, 'name', ts)}): {exc}. "
                            "Install pylibjpeg/pylibjpeg-libjpeg or re-export uncompressed.") from exc
    n = int(ds.get("NumberOfFrames", 1) or 1)
    colour = int(ds.get("SamplesPerPixel", 1)) > 1
    if n == 1:
        arr = arr[None]
    if arr.ndim != (4 if colour else 3):
        raise CineError(f"Unexpected DICOM pixel array shape {arr.shape} for {n} frame(s).")
    sp = _spacing(ds)
    meta = {"format": "dicom", "sop_class": str(ds.get("SOPClassUID", "")), "spacing_known": sp is not None,
            "photometric": str(ds.get("PhotometricInterpretation", "")), "us_regions": _regions(ds)}
    row_mm, col_mm = sp if sp is not None else (1.0, 1.0)
    m = np.eye(4)
    if "ImageOrientationPatient" in ds and len(ds.ImageOrientationPatient) == 6:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        ci, cj = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
        k = np.cross(ci, cj)
        m[:3, 0], m[:3, 1], m[:3, 2] = ci * col_mm, cj * row_mm, k / np.linalg.norm(k)
        if "ImagePositionPatient" in ds and len(ds.ImagePositionPatient) == 3:
            m[:3, 3] = [float(v) for v in ds.ImagePositionPatient]
        m = ras_matrix(m)
    else:   # no plane geometry: identity directions in LPS (as DICOM readers such as Slicer's assume)
        m[0, 0], m[1, 1] = col_mm, row_mm
        m = ras_matrix(m)
    return RawCine(np.ascontiguousarray(arr), m, _times(ds, arr.shape[0]), meta)
