"""The input node -> `Cine`: find the browser and its volume sequence, copy frames, geometry
(IJK-to-RAS, exactly) and frame times (index values in s / ms, else the playback rate)."""
from __future__ import annotations

import numpy as np

from ..cine import Cine, seconds_per_unit
from ..errors import CineError
from ._common import ijk_to_ras_of, volume_array


def _browsers(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode"))]


def resolve_input(node) -> tuple:
    """Browser, sequence or proxy volume -> ``(browser, volume_sequence)``."""
    if node is None:
        raise CineError("No input selected: choose a sequence browser or a cine volume.")
    if node.IsA("vtkMRMLSequenceBrowserNode"):
        seq = node.GetMasterSequenceNode()
        if seq is None:
            raise CineError(f"Sequence browser {node.GetName()!r} has no sequence; load a cine first.")
        return node, seq
    scene = node.GetScene()
    if node.IsA("vtkMRMLSequenceNode"):
        for b in _browsers(scene) if scene else []:
            if b.GetMasterSequenceNode() is node or b.IsSynchronizedSequenceNode(node, True):
                return b, node
        raise CineError(f"Sequence {node.GetName()!r} is not played by any sequence browser; "
                        "open it in the Sequences module first.")
    for b in _browsers(scene) if scene else []:
        seq = b.GetSequenceNode(node)
        if seq is not None:
            return b, seq
    raise CineError(f"{node.GetName()!r} is not part of a sequence; use cine_from_volume for a single volume.")


def _frame_times(seq, browser, n: int) -> tuple:
    """Seconds per item from the index values; else from the browser's playback rate."""
    name, unit = (seq.GetIndexName() or "").lower(), (seq.GetIndexUnit() or "").strip()
    # a unit-less index counts as time only when it is named so (else it may be a slice number)
    scale = seconds_per_unit(unit) if unit or name in ("time", "t") else None
    if scale is not None:
        try:
            t = np.array([float(seq.GetNthIndexValue(i)) for i in range(n)]) * scale
            if n < 2 or np.all(np.diff(t) > 0):
                return t, "index"
        except ValueError:
            pass
    fps = float(browser.GetPlaybackRateFps()) if browser is not None else 0.0
    fps = fps if fps > 0 else 30.0
    return np.arange(n) / fps, f"playback rate {fps:g} fps"


def cine_from_sequence(node, browser=None) -> Cine:
    """A volume sequence (browser, sequence or proxy) -> `Cine` with exact geometry and times (s).

    Every frame must be a one-slice volume with the same size and IJK-to-RAS; RGB vector frames
    become grey (BT.601, see `echosam.cine`). ``metadata`` keeps the node IDs and index values.
    """
    found_browser, seq = resolve_input(node) if browser is None else (browser, resolve_input(node)[1])
    n = seq.GetNumberOfDataNodes()
    if n == 0:
        raise CineError(f"Sequence {seq.GetName()!r} is empty.")
    first = seq.GetNthDataNode(0)
    if first is None or not first.IsA("vtkMRMLVolumeNode"):
        raise CineError(f"Sequence {seq.GetName()!r} holds {first.GetClassName() if first else 'nothing'}, "
                        "not image volumes; select the ultrasound cine sequence.")
    m0 = ijk_to_ras_of(first)
    frames = []
    for i in range(n):
        vol = seq.GetNthDataNode(i)
        a = volume_array(vol)
        if a.shape[0] != 1:
            raise CineError(f"Frame {i} of {seq.GetName()!r} has {a.shape[0]} slices: this is 3D+t, not a 2D cine. "
                            "Extract one slice (Crop Volume / Reformat) first.")
        if frames and a.shape[1:] != frames[0].shape:
            raise CineError(f"Frame {i} is {a.shape[1:]} but frame 0 is {frames[0].shape}; all frames must match.")
        if i and not np.allclose(ijk_to_ras_of(vol), m0, atol=1e-6):
            raise CineError(f"Frame {i} has a different geometry (IJK-to-RAS) from frame 0; resample the sequence first.")
        frames.append(a[0])
    times, source = _frame_times(seq, found_browser, n)
    meta = {"sequence_id": seq.GetID(), "browser_id": found_browser.GetID() if found_browser else None,
            "index_values": [seq.GetNthIndexValue(i) for i in range(n)], "index_name": seq.GetIndexName(),
            "index_unit": seq.GetIndexUnit(), "times_from": source, "colour": frames[0].ndim == 3,
            "source_class": first.GetClassName()}
    return Cine.from_array(np.stack(frames), ijk_to_ras=m0, frame_times=times, name=seq.GetName(), metadata=meta)


def cine_from_volume(volume, slices_as_frames: bool = False, fps: float = 30.0) -> Cine:
    """A single 2D volume (one frame) -> `Cine`. A 3D volume raises `CineError` unless
    ``slices_as_frames`` (each slice becomes a frame at ``fps``)."""
    if volume is None or not volume.IsA("vtkMRMLVolumeNode"):
        raise CineError("Select an image volume (or a sequence browser) as input.")
    a = volume_array(volume)
    if a.shape[0] > 1 and not slices_as_frames:
        raise CineError(f"{volume.GetName()!r} is a 3D volume with {a.shape[0]} slices, not a cine. Load the cine "
                        "as a sequence, or choose 'slices as frames' to treat slices as time.")
    meta = {"volume_id": volume.GetID(), "colour": a.ndim == 4, "source_class": volume.GetClassName()}
    return Cine.from_array(a, ijk_to_ras=ijk_to_ras_of(volume), fps=fps, name=volume.GetName(), metadata=meta)
