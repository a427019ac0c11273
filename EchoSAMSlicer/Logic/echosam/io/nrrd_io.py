"""NRRD (`.nrrd`, `.nhdr`) and Slicer volume sequences (`.seq.nrrd`).

What we write is what Slicer's `vtkMRMLVolumeSequenceStorageNode` writes (checked against
slicer-core 5.13): a 4D NRRD with sizes ``W H 1 T``, ``kinds: domain domain domain list``,
``space: left-posterior-superior``, LPS ``space directions``/``space origin`` from our RAS
IJK-to-RAS, ``labels: "" "" "" "time"``, ``units: "" "" "" "s"`` and the key-value pairs
``DataNodeClassName:=vtkMRMLScalarVolumeNode`` (``vtkMRMLLabelMapVolumeNode`` for labels),
``axis 3 index type:=numeric``, ``axis 3 index values:=t0 t1 ...`` (seconds, written losslessly).
The list (time) axis is the *last* axis in the header, i.e. the slowest in the file, which
is the first axis of the C-order array. Older Slicer files put it first
(``kinds: list domain domain domain``, ``axis 0 index values``); both are read.

How a cine is told apart from a 3D volume when reading:
- an axis whose kind is ``list``/``time``/``sequence`` or whose space direction is ``none``
  (and is not a colour axis) is the time axis -> cine;
- 3 spatial axes and no time axis: one slice -> a single frame; more than one slice -> a 3D
  volume, refused unless ``slices_as_frames=True`` (then the slices are the frames);
- 3 spatial axes with >1 slice *and* a time axis -> 3D+t, refused.
Colour axes (``RGB-color``, ``RGBA-color``, ``3-color``, ``vector``...) become grey later.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import CineError
from ..structures import BY_LABEL
from .common import RawCine, lps_matrix, seconds

TIME_KINDS = {"list", "time", "sequence"}
COLOUR_KINDS = {"rgb-color", "rgba-color", "3-color", "4-color", "hsv-color", "xyz-color", "vector",
                "3-vector", "4-vector", "covariant-vector", "normal", "complex", "point"}
SPACE_FLIPS = {"left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
               "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
               "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
               "scanner-xyz": (1, 1, 1), "3d-right-handed": (1, 1, 1)}


def _space_directions(hdr: dict, dim: int) -> list:
    """Per-axis direction vectors (world units) or None for non-spatial axes."""
    sd = hdr.get("space directions")
    if sd is None:
        spacings = hdr.get("spacings")
        kinds = [k.lower() for k in hdr.get("kinds", ["domain"] * dim)]
        out, n = [], 0
        for ax in range(dim):
            if kinds[ax] in ("domain", "space"):
                v = np.zeros(3)
                s = float(spacings[ax]) if spacings is not None and np.isfinite(spacings[ax]) else 1.0
                v[min(n, 2)] = s
                n += 1
                out.append(v)
            else:
                out.append(None)
        return out
    out = []
    for row in np.asarray(sd, dtype=float):
        if not np.all(np.isfinite(row)):
            out.append(None)
        else:
            v = np.zeros(3)
            v[:len(row)] = row[:3]
            out.append(v)
    return out


def _frame_times(hdr: dict, ax: int, n: int) -> np.ndarray | None:
    unit = ""
    units = hdr.get("units")
    if units is not None and ax < len(units):
        unit = units[ax]
    text = hdr.get(f"axis {ax} index values")
    if not text:      # Slicer numbers the list axis without the colour axis ("axis 3" in a 5D RGB file)
        text = next((v for k, v in hdr.items() if re.fullmatch(r"axis \d+ index values", str(k))
                     and len(str(v).split()) == n), None)
    if text:
        try:
            vals = np.array([float(v) for v in str(text).split()])
        except ValueError as exc:
            raise CineError(f"Frame times in 'axis {ax} index values' are not numbers: {exc}.") from exc
        if vals.size == n:
            return seconds(vals, unit)
    sp = hdr.get("spacings")
    if sp is not None and ax < len(sp) and np.isfinite(sp[ax]) and sp[ax] > 0:
        mins = hdr.get("axis mins")
        t0 = float(mins[ax]) if mins is not None and np.isfinite(mins[ax]) else 0.0
        return seconds(t0 + np.arange(n) * float(sp[ax]), unit)
    return None


_TYPE_BYTES = {1: ("char", "int8", "uchar", "uint8", "signed char", "unsigned char", "int8_t", "uint8_t"),
               2: ("short", "ushort", "int16", "uint16", "short int", "unsigned short", "int16_t", "uint16_t"),
               4: ("int", "uint", "int32", "uint32", "float", "unsigned int", "int32_t", "uint32_t")}


def _item_bytes(type_name: str) -> int:
    t = str(type_name).lower()
    return next((n for n, names in _TYPE_BYTES.items() if t in names), 8)


def check_declared_size(path: Path) -> None:
    """Refuse, before any pixel is read, a NRRD whose header declares more than the size limit or
    whose compressed data inflates beyond what the header declares (`limits`)."""
    import nrrd

    from .limits import check_bytes, check_inflated

    hdr = nrrd.read_header(str(path))
    sizes = [int(v) for v in np.atleast_1d(hdr.get("sizes", []))]
    declared = _item_bytes(hdr.get("type", "")) * int(np.prod(np.asarray(sizes, dtype=object))) if sizes else 0
    check_bytes(declared, path.name)
    encoding = str(hdr.get("encoding", "raw")).lower()
    if encoding not in ("gzip", "gz", "bzip2", "bz2"):
        return
    data_file = hdr.get("data file") or hdr.get("datafile")
    if data_file:
        with open(path.parent / str(data_file), "rb") as f:
            check_inflated(f, declared, encoding, path.name)
        return
    with open(path, "rb") as f:
        head = f.read(1 << 20)
        end = next((i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := head.find(sep)) >= 0), None)
        if end is None:
            return                      # no data section: pynrrd reports the broken header
        f.seek(end)
        check_inflated(f, declared, encoding, path.name)


def read_nrrd(path: Path, slices_as_frames: bool = False) -> RawCine:
    """Read a NRRD/NHDR/.seq.nrrd file into (T, H, W[, C]) frames with RAS geometry (sizes checked first)."""
    import nrrd

    check_declared_size(path)
    data, hdr = nrrd.read(str(path), index_order="F")   # array axes follow header axes
    dim = int(hdr["dimension"])
    kinds = [str(k).lower() for k in hdr.get("kinds", ["domain"] * dim)]
    dirs = _space_directions(hdr, dim)
    colour, time, spatial = [], [], []
    for ax in range(dim):
        if kinds[ax] in COLOUR_KINDS:
            colour.append(ax)
        elif dirs[ax] is None or kinds[ax] in TIME_KINDS:
            time.append(ax)
        else:
            spatial.append(ax)
    if len(colour) > 1 or len(time) > 1 or not 2 <= len(spatial) <= 3:
        raise CineError(f"NRRD axes {kinds} (sizes {list(data.shape)}) are not a 2D+t cine: expected 2 or 3 "
                        "spatial axes, at most one time/list axis and one colour axis.")
    space = str(hdr.get("space", "left-posterior-superior")).lower()
    flips = np.array(SPACE_FLIPS.get(space, (1, 1, 1)), dtype=float)
    m = np.eye(4)
    for col, ax in enumerate(spatial):
        m[:3, col] = dirs[ax] * flips
    if len(spatial) == 2:
        k = np.cross(m[:3, 0], m[:3, 1])
        m[:3, 2] = k / np.linalg.norm(k) if np.linalg.norm(k) > 0 else (0, 0, 1)
    origin = hdr.get("space origin")
    if origin is not None:
        o = np.zeros(3)
        o[:len(origin)] = np.asarray(origin, dtype=float)[:3]
        m[:3, 3] = o * flips
    n_slices = data.shape[spatial[2]] if len(spatial) == 3 else 1
    meta = {"format": "nrrd", "node_class": hdr.get("DataNodeClassName", ""),
            "header": {k: v for k, v in hdr.items() if isinstance(v, str)}}
    frame_times = None
    if time:
        if n_slices > 1:
            raise CineError(f"This NRRD is 3D+t ({n_slices} slices per frame); EchoSAM segments 2D cines. "
                            "Extract one slice per frame first.")
        frame_times = _frame_times(hdr, time[0], data.shape[time[0]])
    elif n_slices > 1:
        if not slices_as_frames:
            raise CineError(f"This is a 3D volume with {n_slices} slices, not a cine; pass slices_as_frames=True "
                            "(--slices-as-frames) to treat slices as frames.")
        time, spatial = [spatial[2]], spatial[:2]
        meta["slices_as_frames"] = True
    # order axes as (T, K, J, I, C) then drop K
    order = time + spatial[::-1] + colour
    arr = np.transpose(data, order)
    if not time:
        arr = arr[None]
    if len(spatial) == 3:
        arr = arr[:, 0]
    return RawCine(np.ascontiguousarray(arr), m, frame_times, meta)


def _header(cine: Cine, node_class: str, extra: dict | None = None) -> dict:
    lps = lps_matrix(cine.ijk_to_ras)
    directions = np.vstack([lps[:3, 0], lps[:3, 1], lps[:3, 2], [np.nan] * 3])
    hdr = {"dimension": 4, "space": "left-posterior-superior", "space directions": directions,
           "kinds": ["domain", "domain", "domain", "list"], "labels": ["", "", "", "time"],
           "units": ["", "", "", "s"], "space origin": lps[:3, 3], "encoding": "gzip",
           "DataNodeClassName": node_class, "axis 3 index type": "numeric",
           "axis 3 index values": " ".join(repr(float(t)) for t in cine.frame_times)}
    hdr.update(extra or {})
    return hdr


def _write(arr_thw: np.ndarray, hdr: dict, tmp: Path) -> None:
    import nrrd

    data = np.ascontiguousarray(arr_thw[:, None])     # (T, 1, H, W) = C-order of W H 1 T
    nrrd.write(str(tmp), data, hdr, index_order="C")


def write_nrrd(cine: Cine, tmp: Path) -> None:
    """Write ``cine`` as a Slicer volume sequence NRRD to ``tmp`` (the registry renames it in place)."""
    _write(cine.frames, _header(cine, "vtkMRMLScalarVolumeNode"), tmp)


def segment_fields(labels: np.ndarray) -> dict:
    """Key-value pairs naming the structures present in ``labels`` (ID, name, label value, RGB colour)."""
    out, n = {}, 0
    for value in sorted(int(v) for v in np.unique(labels) if v != 0):
        s = BY_LABEL.get(value)
        if s is None:
            continue
        out.update({f"Segment{n}_ID": s.segment_id, f"Segment{n}_Name": s.name,
                    f"Segment{n}_LabelValue": str(s.label), f"Segment{n}_Color": " ".join(f"{c:g}" for c in s.color)})
        n += 1
    return out


def write_nrrd_labels(labels: np.ndarray, cine: Cine, tmp: Path) -> None:
    """Write a (T, H, W) uint8 label map as a Slicer label-map volume sequence on the cine's grid."""
    _write(labels, _header(cine, "vtkMRMLLabelMapVolumeNode", segment_fields(labels)), tmp)


def write_nhdr_labels(labels: np.ndarray, cine: Cine, path: Path) -> None:
    """Label-map variant of `write_nhdr`."""
    write_nhdr(cine, path, labels)


def write_nhdr(cine: Cine, path: Path, labels: np.ndarray | None = None) -> None:
    """Detached header + ``<name>.raw.gz`` data file, both written in a temporary folder next to
    ``path`` and moved in place (data first, then header) only when both are complete."""
    import nrrd

    if labels is None:
        arr, hdr = cine.frames, _header(cine, "vtkMRMLScalarVolumeNode")
    else:
        arr, hdr = labels, _header(cine, "vtkMRMLLabelMapVolumeNode", segment_fields(labels))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        nrrd.write(str(tmpdir / path.name), np.ascontiguousarray(arr[:, None]), hdr, index_order="C",
                   detached_header=True)
        files = sorted(tmpdir.iterdir(), key=lambda p: p.name == path.name)   # header last
        for f in files:
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def label_structures(meta_header: dict) -> list[dict]:
    """Structures named in a label file's key-value pairs: [{id, name, label, color}, ...]."""
    out = []
    n = 0
    while f"Segment{n}_ID" in meta_header:
        h = meta_header
        out.append({"id": h[f"Segment{n}_ID"], "name": h.get(f"Segment{n}_Name", ""),
                    "label": int(h.get(f"Segment{n}_LabelValue", 0)),
                    "color": [float(c) for c in h.get(f"Segment{n}_Color", "0 0 0").split()]})
        n += 1
    return out


__all__ = ["read_nrrd", "write_nrrd", "write_nrrd_labels", "write_nhdr", "write_nhdr_labels",
           "label_structures"]
