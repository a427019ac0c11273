"""Read and write echo cines, label maps and overlay videos.

One registry (`echosam.io.registry`) maps file extensions to formats: Slicer ``.seq.nrrd``,
``.nrrd``/``.nhdr``, NIfTI ``.nii``/``.nii.gz``, DICOM US multi-frame (``.dcm`` or extension-less
with the ``DICM`` preamble), ``.avi``/``.mp4`` and folders of PNG frames; ``.gif`` for overlays.
Every writer is atomic (`echosam.io.atomic`): the destination appears only when complete.

How a 3D file is told apart from a cine is documented per format in `nrrd_io` and `nifti_io`:
a time/list axis (NRRD) or a 4th axis (NIfTI) makes a cine; a plain 3D volume is refused unless
``slices_as_frames=True``; CAMUS ``*_sequence.nii.gz`` files (3rd axis = time) are cines.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..cine import Cine, geometry_matrix
from ..errors import CineError
from .atomic import atomic_file
from .common import check_labels
from .labelmap import check_label_values
from .overlay import render_overlay
from .registry import (FORMATS, format_for_reading, format_for_writing, is_cine_file, reading, supported_extensions,
                       write_with)

OVERLAY_SUFFIXES = (".mp4", ".avi", ".gif")


def _stem(path: Path) -> str:
    name = path.name
    for fmt in FORMATS:
        for s in fmt.suffixes:
            if s != "/" and name.lower().endswith(s):
                return name[: -len(s)]
    return path.stem or name


def cine_stem(path: str | os.PathLike) -> str:
    """A cine file's name without its format's suffix (``a.seq.nrrd`` -> ``a``, ``b.nii.gz`` -> ``b``)."""
    return _stem(Path(path))


def _to_cine(raw, path: Path, fps: Optional[float], fmt_name: str) -> Cine:
    n = raw.frames.shape[0]
    meta = dict(raw.metadata, source=str(path), format=fmt_name)
    if fps is not None:
        if not (np.isfinite(fps) and fps > 0):
            raise CineError(f"Frame rate must be a positive number of frames per second, got {fps}.")
        times, meta["timing"] = np.arange(n) / float(fps), "given"
    elif raw.frame_times is not None:
        times, meta["timing"] = raw.frame_times, "file"
    else:
        times, meta["timing"] = None, "default"
    m = raw.ijk_to_ras if raw.ijk_to_ras is not None else geometry_matrix((1.0, 1.0))
    return Cine.from_array(raw.frames, frame_times=times, ijk_to_ras=m, name=_stem(path), metadata=meta)


def read_cine(path: str | os.PathLike, slices_as_frames: bool = False, fps: Optional[float] = None) -> Cine:
    """Read a cine file (or PNG folder) into a `Cine`: frames (T, H, W), exact IJK-to-RAS (mm), times (s).

    ``fps`` overrides the file's timing (frame i at i / fps seconds); without it the file's times
    are used, else 30 fps (``metadata['timing']`` says which: ``given``/``file``/``default``).
    ``slices_as_frames`` reads a 3D volume's slices as frames. Raises `CineError` for missing,
    empty, truncated or unknown files, NaN/infinite frames and 3D volumes.
    """
    path = Path(path)
    fmt = format_for_reading(path)
    with reading(path, fmt):
        raw = fmt.read(path, slices_as_frames)
    return _to_cine(raw, path, fps, fmt.name)


def write_cine(cine: Cine, path: str | os.PathLike) -> Path:
    """Write ``cine`` in the format chosen by ``path``'s extension (a path without one: PNG folder).
    Atomic: on error nothing is left at ``path``. Returns the path written."""
    if not isinstance(cine, Cine):
        raise CineError(f"write_cine needs a Cine, got {type(cine).__name__}; build one with Cine.from_array.")
    path = Path(path)
    fmt = format_for_writing(path)
    write_with(fmt, fmt.write, path, cine)
    return path


def read_labels(path: str | os.PathLike, slices_as_frames: bool = False) -> tuple[np.ndarray, Cine]:
    """Read a label map written by `write_labels` (or any integer NRRD/NIfTI label sequence).

    Returns ``(labels (T, H, W) uint8, cine)`` where ``cine.frames`` is the same label array and
    carries the geometry and frame times; ``cine.metadata['structures']`` lists the structures
    named in the file (NRRD key-value pairs), if any. ``slices_as_frames`` as in `read_cine`.
    A file that is not a label map (a grey image: other values, a scalar-volume node class) is a
    `CineError` (`labelmap.check_label_values`).
    """
    from .nrrd_io import label_structures

    path = Path(path)
    fmt = format_for_reading(path)
    if fmt.read_labels is None:
        raise CineError(f"Label maps cannot be read from {fmt.name} files; use .seq.nrrd, .nrrd or .nii.gz.")
    with reading(path, fmt):
        raw = fmt.read_labels(path, slices_as_frames)
    lab = np.asarray(raw.frames)
    if lab.ndim != 3:
        raise CineError(f"{path.name} is not a single-channel label map (shape {lab.shape}); it looks like a colour "
                        "image. Give the label file.")
    raw.frames = check_label_values(lab, path.name, str(raw.metadata.get("node_class", "")))
    cine = _to_cine(raw, path, None, fmt.name)
    cine.metadata["structures"] = label_structures(raw.metadata.get("header", {}))
    return cine.frames, cine


def write_labels(labels: np.ndarray, cine: Cine, path: str | os.PathLike) -> Path:
    """Write a (T, H, W) label map (0 background, 1 LV, 2 myocardium, 3 LA) on ``cine``'s grid and
    times: ``.seq.nrrd``/``.nrrd`` (Slicer label-map volume sequence with structure names and
    colours as key-value pairs), ``.nhdr`` or NIfTI. Atomic."""
    lab = check_labels(labels, cine)
    path = Path(path)
    fmt = format_for_writing(path, labels=True)
    write_with(fmt, fmt.write_labels, path, lab, cine)
    return path


def write_overlay(cine: Cine, labels: np.ndarray, path: str | os.PathLike, fps: Optional[float] = None) -> Path:
    """Write the cine with coloured structures (translucent fill + contour, see `overlay`) as
    ``.mp4``, ``.avi`` (lossless FFV1) or ``.gif``, at ``fps`` (default: the cine's). Atomic."""
    from .video_io import write_gif, write_video

    lab = check_labels(labels, cine)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OVERLAY_SUFFIXES:
        raise CineError(f"Overlay videos are written as {', '.join(OVERLAY_SUFFIXES)}; got {path.name!r}.")
    rate = float(fps) if fps is not None else cine.fps
    rgb = render_overlay(cine, lab)
    with atomic_file(path, suffix=suffix) as tmp:
        if suffix == ".gif":
            write_gif(rgb, tmp, rate)
        else:
            write_video(rgb, tmp, rate, suffix)
    return path


__all__ = ["read_cine", "cine_stem", "is_cine_file", "write_cine", "read_labels", "write_labels", "write_overlay",
           "render_overlay", "supported_extensions", "FORMATS"]
