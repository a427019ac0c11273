"""The one reader/writer registry, keyed by file extension.

| format      | extensions                  | read | write | labels        |
|-------------|-----------------------------|------|-------|---------------|
| seq.nrrd    | .seq.nrrd                   | yes  | yes   | read + write  |
| nrrd        | .nrrd, .nhdr                | yes  | yes   | read + write  |
| nifti       | .nii, .nii.gz               | yes  | yes   | read + write  |
| dicom       | .dcm, extension-less + DICM | yes  | yes   |               |
| video       | .avi, .mp4                  | yes  | yes   |               |
| png         | a folder of .png frames     | yes  | yes   |               |
| gif         | .gif                        |      | overlays only |       |

The longest matching extension wins (``x.seq.nrrd`` is seq.nrrd, ``x.nii.gz`` is NIfTI). A file
with another (or no) extension is DICOM when bytes 128..131 are ``DICM``. A folder (or, for
writing, a path with no extension) is a PNG-frame folder. Library errors raised while reading
(truncated gzip, bad header, undecodable stream) become `CineError` naming the file.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..errors import CineError, EchoSAMError
from . import dicom_io, nifti_io, nrrd_io, png_io, video_io


@dataclass(frozen=True)
class Format:
    """One file format. ``write``/``write_labels`` get a temporary path (``atomic="file"``) or
    folder (``"folder"``) that the registry moves in place, or the final path (``"self"``: the
    writer is atomic on its own)."""

    name: str
    suffixes: tuple
    description: str
    read: Optional[Callable] = None
    write: Optional[Callable] = None
    read_labels: Optional[Callable] = None
    write_labels: Optional[Callable] = None
    atomic: str = "file"


FORMATS: list[Format] = [
    Format("seq.nrrd", (".seq.nrrd",), "Slicer volume sequence (4D NRRD, time list axis)",
           nrrd_io.read_nrrd, nrrd_io.write_nrrd, nrrd_io.read_nrrd, nrrd_io.write_nrrd_labels),
    Format("nrrd", (".nrrd",), "NRRD (same layout as .seq.nrrd)",
           nrrd_io.read_nrrd, nrrd_io.write_nrrd, nrrd_io.read_nrrd, nrrd_io.write_nrrd_labels),
    Format("nhdr", (".nhdr",), "NRRD detached header + .raw.gz data file",
           nrrd_io.read_nrrd, nrrd_io.write_nhdr, nrrd_io.read_nrrd, nrrd_io.write_nhdr_labels, atomic="self"),
    Format("nifti", (".nii.gz", ".nii"), "NIfTI-1 (x, y, 1, t); CAMUS *_sequence.nii.gz (x, y, t)",
           nifti_io.read_nifti, nifti_io.write_nifti, nifti_io.read_nifti, nifti_io.write_nifti_labels),
    Format("dicom", (".dcm", ".dicom"), "DICOM ultrasound multi-frame",
           dicom_io.read_dicom, dicom_io.write_dicom),
    Format("avi", (".avi",), "AVI video (FFV1 lossless when written here)",
           video_io.read_video, video_io.write_video_cine),
    Format("mp4", (".mp4",), "MP4 video (H.264, lossy)", video_io.read_video, video_io.write_video_cine),
    Format("png", ("/",), "folder of PNG frames + cine.json",
           png_io.read_png_folder, png_io.write_png_folder, atomic="folder"),
]
BY_NAME = {f.name: f for f in FORMATS}
WRITE_ONLY = {".gif": "GIF is written only for overlay videos (write_overlay, --overlay)"}


def supported_extensions(for_writing: bool = False) -> str:
    """Human-readable list of the extensions `read_cine` (or `write_cine`) accepts."""
    exts = [s for f in FORMATS for s in f.suffixes if s != "/"]
    tail = "or a folder of .png frames" if for_writing else "a folder of .png frames, or an extension-less DICOM file"
    return ", ".join(exts) + ", " + tail


def is_dicom_file(path: Path) -> bool:
    """True when the file has the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_cine_file(path: Path) -> bool:
    """True for a file whose name (or DICOM preamble) gives a cine format `read_cine` reads; used to
    find the cines of a folder (PNG frame folders are folders, not files)."""
    return path.is_file() and (_by_suffix(path) is not None or is_dicom_file(path))


def _by_suffix(path: Path) -> Optional[Format]:
    name = path.name.lower()
    best, best_len = None, 0
    for fmt in FORMATS:
        for s in fmt.suffixes:
            if s != "/" and name.endswith(s) and len(s) > best_len:
                best, best_len = fmt, len(s)
    return best


def format_for_reading(path: Path) -> Format:
    """The format of an existing file or folder; CineError when missing, empty or unknown."""
    if not path.exists():
        raise CineError(f"{path} does not exist; check the path.")
    if path.is_dir():
        return BY_NAME["png"]
    if path.stat().st_size == 0:
        raise CineError(f"{path} is empty (0 bytes); the file was not written completely. Export it again.")
    fmt = _by_suffix(path)
    if fmt is not None:
        return fmt
    if is_dicom_file(path):
        return BY_NAME["dicom"]
    raise CineError(f"Unknown cine format for {path.name!r}. Supported: {supported_extensions()}.")


def format_for_writing(path: Path, labels: bool = False) -> Format:
    """The format a path will be written in; CineError for unknown or read-only extensions."""
    fmt = _by_suffix(path)
    if fmt is None and (path.is_dir() or path.suffix == ""):
        fmt = BY_NAME["png"]
    if fmt is None:
        if path.suffix.lower() in WRITE_ONLY:
            raise CineError(f"Cannot write a cine as {path.name!r}: {WRITE_ONLY[path.suffix.lower()]}. "
                            f"Use one of {supported_extensions(True)}.")
        raise CineError(f"Cannot write {path.name!r}: unknown output format. Use one of {supported_extensions(True)}.")
    if labels and fmt.write_labels is None:
        names = ", ".join(s for f in FORMATS if f.write_labels for s in f.suffixes)
        raise CineError(f"Label maps cannot be written as {fmt.name}; use {names}.")
    return fmt


@contextlib.contextmanager
def reading(path: Path, fmt: Format) -> Iterator[None]:
    """Turn library errors raised while reading ``path`` into a `CineError` that names the file."""
    try:
        yield
    except EchoSAMError:
        raise
    except MemoryError:
        raise
    except PermissionError:
        raise CineError(f"Cannot read {path}: permission denied. Check the file's permissions (or copy it "
                        "somewhere you can read it).") from None
    except Exception as exc:   # pynrrd, SimpleITK, pydicom, PyAV, Pillow, gzip each raise their own types
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CineError(f"Cannot read {path.name} as {fmt.name}: {detail}. The file may be truncated or not a valid "
                        f"{fmt.name} file; re-export it.") from exc


def write_with(fmt: Format, writer: Callable, path: Path, *args) -> None:
    """Run ``writer(*args, target)`` so that ``path`` appears only when complete."""
    from .atomic import atomic_file, atomic_folder

    if fmt.atomic == "self":
        writer(*args, path)
    elif fmt.atomic == "folder":
        with atomic_folder(path) as tmp:
            writer(*args, tmp)
    else:
        suffix = next(s for s in fmt.suffixes if path.name.lower().endswith(s))
        with atomic_file(path, suffix=suffix) as tmp:
            writer(*args, tmp)


__all__ = ["Format", "FORMATS", "BY_NAME", "format_for_reading", "format_for_writing", "is_dicom_file",
           "reading", "write_with", "supported_extensions"]
