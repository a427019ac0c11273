"""NIfTI (`.nii`, `.nii.gz`) through SimpleITK.

Writing: a 4D image (x=W, y=H, z=1, t=T). ``pixdim[1..3]`` hold the column, row and slice
spacing in mm, ``pixdim[4]`` the frame interval in s (``xyzt_units`` = mm + s), ``toffset`` the
first frame time, and qform/sform the geometry (ITK writes LPS -> NIfTI RAS). NIfTI stores these
as float32, so geometry and times come back to float32 precision (about 1e-7 relative), and a
cine with uneven frame times is stored with its median interval.

Reading - how a cine is told apart from a 3D volume:
- 4D (x, y, 1, t): a cine; times from ``pixdim[4]`` (ITK converts ``xyzt_units`` to s) and
  ``toffset``. 4D with more than one slice is 3D+t and refused.
- 2D, or 3D with one slice: a single frame.
- 3D (x, y, n > 1): NIfTI has no standard way to say that the 3rd axis is time, so it is a cine
  only when (a) ``slices_as_frames=True`` or (b) the file name follows the CAMUS 2023 naming of
  its sequences, ``*_sequence.nii[.gz]`` / ``*_sequence_gt.nii[.gz]`` (e.g.
  ``patient0001_4CH_half_sequence.nii.gz``), whose 3rd axis is time. Times then come from the
  ``fps`` the caller gives (CAMUS headers carry none; default 30 fps). Otherwise it is a 3D
  volume and `read_nifti` raises CineError saying to pass ``--slices-as-frames``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import CineError
from .common import RawCine, lps_matrix, ras_matrix

CAMUS_SEQUENCE = re.compile(r"_sequence(_gt)?\.nii(\.gz)?$", re.IGNORECASE)


def _matrix(img, n_spatial: int) -> np.ndarray:
    """IJK-to-RAS from the first three (or two) axes of a SimpleITK image."""
    dim = img.GetDimension()
    d = np.array(img.GetDirection(), dtype=float).reshape(dim, dim)
    sp = np.array(img.GetSpacing(), dtype=float)
    org = np.array(img.GetOrigin(), dtype=float)
    m = np.eye(4)
    n = min(dim, 3)
    for c in range(n):
        scale = sp[c] if c < n_spatial else 1.0
        m[:n, c] = d[:n, c] * scale
    m[:n, 3] = org[:n]
    if n == 2:
        m[:3, 2] = (0.0, 0.0, 1.0)
    return ras_matrix(m)


def _check_complete(path: Path) -> None:
    """Before any pixel is read: the header's declared size must pass the size limit (`limits`), and the
    stored bytes must hold what the header promises (ITK fills a truncated NIfTI silently) and no more
    (a gzip bomb is streamed with a bounded count, never inflated in memory)."""
    import gzip

    import SimpleITK as sitk

    from .limits import check_bytes, human

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    comp_bytes = sitk.Image([1] * len(size), reader.GetPixelID()).GetSizeOfPixelComponent()
    pixel_bytes = int(np.prod(np.asarray(size, dtype=object))) * reader.GetNumberOfComponents() * comp_bytes
    check_bytes(pixel_bytes, path.name)
    offset = int(float(reader.GetMetaData("vox_offset"))) if reader.HasMetaDataKey("vox_offset") else 352
    expected = offset + pixel_bytes
    if path.name.lower().endswith(".gz"):
        stored, cap = 0, expected + (1 << 20)
        try:
            with gzip.open(path, "rb") as f:
                while stored <= cap and (chunk := f.read(1 << 22)):
                    stored += len(chunk)
        except (EOFError, OSError) as exc:
            raise CineError(f"{path.name} is truncated or corrupt ({exc}); export it again.") from exc
        if stored > cap:
            raise CineError(f"{path.name} inflates to more than the {human(expected)} its header declares; refused "
                            "(a damaged or hostile file). Re-export it.")
    else:
        stored = path.stat().st_size
    if stored < expected:
        raise CineError(f"{path.name} is truncated: {stored} bytes for {expected} expected; "
                        "export it again.")


def read_nifti(path: Path, slices_as_frames: bool = False) -> RawCine:
    """Read a NIfTI cine into (T, H, W[, C]) frames; see the module docstring for the rules."""
    import SimpleITK as sitk

    _check_complete(path)
    img = sitk.ReadImage(str(path))
    dim, size = img.GetDimension(), img.GetSize()
    arr = sitk.GetArrayFromImage(img)          # (t, z, y, x[, c]) / (z, y, x[, c]) / (y, x[, c])
    meta = {"format": "nifti"}
    if img.HasMetaDataKey("descrip"):
        meta["descrip"] = img.GetMetaData("descrip")
    times = None
    if dim == 4:
        if size[2] != 1:
            raise CineError(f"This NIfTI is 3D+t ({size[2]} slices x {size[3]} frames); EchoSAM segments 2D cines. "
                            "Extract one slice per frame first.")
        m = _matrix(img, 3)
        dt, t0 = float(img.GetSpacing()[3]), float(img.GetOrigin()[3])
        if np.isfinite(dt) and dt > 0:
            times = t0 + np.arange(size[3]) * dt
        arr = arr[:, 0]
    elif dim == 3 and size[2] > 1:
        if not (slices_as_frames or CAMUS_SEQUENCE.search(path.name)):
            raise CineError(f"This is a 3D volume with {size[2]} slices, not a cine; pass slices_as_frames=True "
                            "(--slices-as-frames) to treat slices as frames (CAMUS *_sequence.nii.gz files "
                            "are recognised by name).")
        meta["slices_as_frames"] = True
        m = _matrix(img, 2)
    elif dim == 3:
        m = _matrix(img, 3)
    elif dim == 2:
        m = _matrix(img, 2)
        arr = arr[None]
    else:
        raise CineError(f"A {dim}D NIfTI image is not a 2D cine (expected 2D, 3D or 4D).")
    return RawCine(np.ascontiguousarray(arr), m, times, meta)


def _image(arr_thw: np.ndarray, cine: Cine, note: str):
    import SimpleITK as sitk

    lps = lps_matrix(cine.ijk_to_ras)
    spacing = [float(np.linalg.norm(lps[:3, c])) for c in range(3)]
    d = np.eye(4)
    for c in range(3):
        d[:3, c] = lps[:3, c] / spacing[c]
    t = cine.frame_times
    dt = float(np.median(np.diff(t))) if t.size > 1 else 1.0 / cine.fps
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr_thw[:, None]), isVector=False)   # (T,1,H,W)
    img.SetSpacing(spacing + [dt])
    img.SetOrigin([float(v) for v in lps[:3, 3]] + [float(t[0])])
    img.SetDirection([float(v) for v in d.ravel()])
    img.SetMetaData("descrip", note[:79])
    return img


def write_nifti(cine: Cine, tmp: Path) -> None:
    """Write ``cine`` as a 4D NIfTI (x, y, 1, t) at ``tmp`` (suffix .nii or .nii.gz)."""
    import SimpleITK as sitk

    sitk.WriteImage(_image(cine.frames, cine, f"EchoSAM cine {cine.name}"), str(tmp), useCompression=True)


def write_nifti_labels(labels: np.ndarray, cine: Cine, tmp: Path) -> None:
    """Write a (T, H, W) uint8 label map as a 4D NIfTI on the cine's grid; ``descrip`` lists the
    label values (1 LV_endo, 2 LV_myo, 3 LA)."""
    import SimpleITK as sitk

    sitk.WriteImage(_image(labels, cine, "EchoSAM labels 1=LV_endo 2=LV_myo 3=LA"), str(tmp), useCompression=True)
