"""The only bridge between the engine and MRML (Slicer's scene): Sequence, Segmentation, Markups,
Table and Plot nodes in, `Cine` / label maps / prompts out, and back.

Qt-free and app-free: every function takes the nodes (or the scene) as arguments and never reads
``slicer.app``, so the same code runs inside Slicer and headless on the ``slicer-core`` wheel.
``slicer`` and ``vtk`` are imported inside this module only, and only when it is imported
(``import echosam`` does not import it).

Conventions:
- An input cine is a volume sequence played by a `vtkMRMLSequenceBrowserNode` (the browser, its
  master sequence or its proxy volume can be passed). Frames are one-slice volumes (K = 1), grey
  scalar or RGB vector, as Slicer's DICOM ultrasound import makes them; their IJK-to-RAS (including
  that import's 180-degree in-plane flip) is copied exactly, never resampled, so ``frames[t, j, i]``
  and every mask pixel sit on the input voxel (i, j, 0).
- Frame times come from the sequence index values in seconds (``ms`` converted); an index that is
  not a time (e.g. "frame") falls back to the browser's playback rate.
- Results go to a segmentation sequence synchronised to the INPUT's browser: one segmentation per
  frame, all frames pre-filled, the same segment IDs / names / colours / terminology
  (`echosam.structures`) everywhere, ``SaveChanges`` on so user edits persist.
- Session state (locked frames, ED/ES, prompts) is stored as attributes of the SEQUENCE node
  (attributes of proxy nodes are lost on frame change) and survives scene save/reload.
"""
from __future__ import annotations

import json
from typing import Iterable, Optional, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support as vnp

from .cine import Cine
from .errors import CineError, EchoSAMError, PromptError
from .structures import Structure, get_structure, parse_structures

ATTR_PREFIX = "EchoSAM."
REF_SEGMENTATION = "EchoSAM.SegmentationSequence"
REF_CURVE_TABLE, REF_CURVE_CHART, REF_EF_TABLE = "EchoSAM.LVCurveTable", "EchoSAM.LVCurveChart", "EchoSAM.EFTable"
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_EXCLUDE_WORDS = {"exclude", "negative", "neg", "background", "bg", "-", "0", "false", "out"}


# ---- finding the browser and the sequence ------------------------------------------------------
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


def _ijk_to_ras(volume) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _volume_array(volume) -> np.ndarray:
    """(K, J, I) or (K, J, I, C) numpy view of a volume's voxels (a copy)."""
    image = volume.GetImageData() if volume is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise CineError(f"Volume {volume.GetName() if volume else '?'!r} has no image data.")
    dims = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    arr = vnp.vtk_to_numpy(scalars).copy()
    comps = scalars.GetNumberOfComponents()
    shape = (dims[2], dims[1], dims[0]) + ((comps,) if comps > 1 else ())
    return arr.reshape(shape)


def _frame_times(seq, browser, n: int) -> tuple:
    """Seconds per item from the index values; else from the browser's playback rate."""
    name, unit = (seq.GetIndexName() or "").lower(), (seq.GetIndexUnit() or "").lower()
    scale = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3}.get(unit)
    if scale is None and name in ("time", "t") and unit == "":
        scale = 1.0
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
    m0 = _ijk_to_ras(first)
    frames = []
    for i in range(n):
        vol = seq.GetNthDataNode(i)
        a = _volume_array(vol)
        if a.shape[0] != 1:
            raise CineError(f"Frame {i} of {seq.GetName()!r} has {a.shape[0]} slices: this is 3D+t, not a 2D cine. "
                            "Extract one slice (Crop Volume / Reformat) first.")
        if frames and a.shape[1:] != frames[0].shape:
            raise CineError(f"Frame {i} is {a.shape[1:]} but frame 0 is {frames[0].shape}; all frames must match.")
        if i and not np.allclose(_ijk_to_ras(vol), m0, atol=1e-6):
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
    a = _volume_array(volume)
    if a.shape[0] > 1 and not slices_as_frames:
        raise CineError(f"{volume.GetName()!r} is a 3D volume with {a.shape[0]} slices, not a cine. Load the cine "
                        "as a sequence, or choose 'slices as frames' to treat slices as time.")
    meta = {"volume_id": volume.GetID(), "colour": a.ndim == 4, "source_class": volume.GetClassName()}
    return Cine.from_array(a, ijk_to_ras=_ijk_to_ras(volume), fps=fps, name=volume.GetName(), metadata=meta)


# ---- segmentations ------------------------------------------------------------------------------
def terminology_entry(s: Structure) -> str:
    """Slicer's serialised terminology entry for a structure (category/type codes of structures.py)."""
    cat, typ = s.category, s.type
    return (f"{TERMINOLOGY_CONTEXT}~{cat[0]}^{cat[1]}^{cat[2]}~{typ[0]}^{typ[1]}^{typ[2]}~^^~"
            f"{ANATOMIC_CONTEXT}~^^~^^")


def _structures(structures) -> list:
    return [s if isinstance(s, Structure) else get_structure(s) for s in structures] \
        if not isinstance(structures, str) else parse_structures(structures)


def _reference_volume(cine: Cine):
    ref = slicer.vtkMRMLScalarVolumeNode()
    image = vtk.vtkImageData()
    image.SetDimensions(cine.shape[2], cine.shape[1], 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    ref.SetAndObserveImageData(image)
    ref.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(cine.ijk_to_ras))
    return ref


def _oriented_mask(mask: np.ndarray, ijk_to_ras: np.ndarray):
    oi = slicer.vtkOrientedImageData()
    h, w = mask.shape
    oi.SetDimensions(w, h, 1)
    oi.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    oi.GetPointData().SetScalars(vnp.numpy_to_vtk(np.ascontiguousarray(mask, dtype=np.uint8).ravel(), deep=True,
                                                 array_type=vtk.VTK_UNSIGNED_CHAR))
    return oi


def _add_segments(seg_node, structures: list) -> None:
    segmentation = seg_node.GetSegmentation()
    for s in structures:
        if segmentation.GetSegment(s.segment_id) is None:
            segment = slicer.vtkSegment()
            segmentation.AddSegment(segment, s.segment_id)
        segment = segmentation.GetSegment(s.segment_id)
        segment.SetName(s.name)
        segment.SetColor(*s.color)
        if hasattr(segment, "SetTerminology"):       # Slicer >= 5.7
            segment.SetTerminology(terminology_entry(s))
        else:
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology_entry(s))


def _fill_frame(seg_node, labels_t: np.ndarray, structures: list, ijk_to_ras: np.ndarray) -> None:
    mode = slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    for s in structures:
        oi = _oriented_mask(labels_t == s.label, ijk_to_ras)
        if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(oi, seg_node, s.segment_id, mode):
            raise EchoSAMError(f"Could not write segment {s.segment_id}; the segmentation node is locked or invalid.")


def find_segmentation_sequence(browser):
    """The segmentation sequence EchoSAM wrote for this browser's input (or None)."""
    seq = browser.GetMasterSequenceNode()
    seg = seq.GetNodeReference(REF_SEGMENTATION) if seq is not None else None
    return seg if seg is not None and browser.IsSynchronizedSequenceNode(seg, False) else None


def _refresh_proxies(browser) -> None:
    """Make the proxies show the current item again after items were replaced."""
    n, i = browser.GetNumberOfItems(), browser.GetSelectedItemNumber()
    if n > 1:
        browser.SetSelectedItemNumber((i + 1) % n)
    browser.SetSelectedItemNumber(max(i, 0))


def write_segmentation_sequence(labels: np.ndarray, cine: Cine, browser, structures: Iterable = ("lv",),
                                name: Optional[str] = None, existing=None, frames: Optional[Iterable[int]] = None):
    """Label map ``(T, H, W)`` -> segmentation sequence synchronised to ``browser`` (the input's).

    Creates the sequence on the first call and reuses it afterwards (``existing``, or the one this
    function recorded on the input sequence), so there are never duplicates. ``frames`` limits the
    write to some frames (all by default). Returns ``(segmentation_sequence, proxy_segmentation)``.
    """
    structures = _structures(structures)
    labels = np.asarray(labels)
    seq = browser.GetMasterSequenceNode()
    if seq is None:
        raise CineError("The sequence browser has no sequence.")
    n = seq.GetNumberOfDataNodes()
    if labels.shape != (n,) + cine.shape[1:] or cine.n_frames != n:
        raise PromptError(f"Labels {labels.shape} do not match the cine ({n} frames of {cine.shape[1:]}).")
    scene = browser.GetScene()
    seg_seq = existing or find_segmentation_sequence(browser)
    created = seg_seq is None
    if created:
        seg_seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name or f"{seq.GetName()} EchoSAM segmentation")
        seg_seq.SetIndexName(seq.GetIndexName())
        seg_seq.SetIndexUnit(seq.GetIndexUnit())
        seg_seq.SetIndexType(seq.GetIndexType())
    elif name:
        seg_seq.SetName(name)
    was_playing = browser.GetPlaybackActive()
    browser.SetPlaybackActive(False)
    work = slicer.vtkMRMLSegmentationNode()          # outside the scene; deep-copied into each item
    scene.AddNode(work)
    try:
        work.SetReferenceImageGeometryParameterFromVolumeNode(_reference_volume(cine))
        todo = range(n) if frames is None or created else sorted(set(int(f) for f in frames))
        for t in todo:
            value = seq.GetNthIndexValue(t)
            item = seg_seq.GetItemNumberFromIndexValue(value)
            if item >= 0:
                work.GetSegmentation().DeepCopy(seg_seq.GetNthDataNode(item).GetSegmentation())
            else:
                work.GetSegmentation().RemoveAllSegments()
            _add_segments(work, structures)
            _fill_frame(work, labels[t], structures, cine.ijk_to_ras)
            seg_seq.SetDataNodeAtValue(work, value)
    finally:
        scene.RemoveNode(work)
    seq.SetNodeReferenceID(REF_SEGMENTATION, seg_seq.GetID())
    if not browser.IsSynchronizedSequenceNode(seg_seq, False):
        browser.AddSynchronizedSequenceNode(seg_seq)
    browser.SetSaveChanges(seg_seq, True)
    browser.SetRecording(seg_seq, True)
    _refresh_proxies(browser)
    proxy = browser.GetProxyNode(seg_seq)
    if proxy is not None and created:
        proxy.SetName(seg_seq.GetName())
        proxy.CreateDefaultDisplayNodes()
    browser.SetPlaybackActive(was_playing)
    return seg_seq, proxy


def _frame_node(browser, seg_seq, frame: int):
    seq = browser.GetMasterSequenceNode()
    if not 0 <= frame < seq.GetNumberOfDataNodes():
        raise PromptError(f"Frame {frame} is outside 0..{seq.GetNumberOfDataNodes() - 1}.")
    if browser.GetSelectedItemNumber() == frame:
        return browser.GetProxyNode(seg_seq)        # may hold edits not yet copied to the item
    item = seg_seq.GetItemNumberFromIndexValue(seq.GetNthIndexValue(frame))
    if item < 0:
        raise PromptError(f"The segmentation sequence has no item for frame {frame}; segment the loop first.")
    return seg_seq.GetNthDataNode(item)


def _reference_image(browser, cine: Optional[Cine]):
    if cine is None:
        cine = Cine.from_array(np.zeros((1,) + _volume_array(browser.GetMasterSequenceNode().GetNthDataNode(0)).shape[1:3],
                                        np.uint8), ijk_to_ras=_ijk_to_ras(browser.GetMasterSequenceNode().GetNthDataNode(0)))
    ref = slicer.vtkOrientedImageData()
    ref.SetDimensions(cine.shape[2], cine.shape[1], 1)
    ref.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(cine.ijk_to_ras))
    ref.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    return ref, cine.shape[1:]


def read_segment_mask(browser, seg_seq, frame: int, structure, cine: Optional[Cine] = None) -> np.ndarray:
    """The mask of one structure on one frame, as the user left it: ``(H, W)`` bool on the cine grid.

    Reads the proxy when ``frame`` is the browser's current frame (Segment Editor edits), the
    sequence item otherwise. This is how an edited frame becomes a correction (`Session.set_mask`).
    """
    s = get_structure(structure)
    node = _frame_node(browser, seg_seq, frame)
    ref, (h, w) = _reference_image(browser, cine)
    if node.GetSegmentation().GetSegment(s.segment_id) is None:
        raise PromptError(f"Frame {frame} has no segment {s.segment_id!r}; do not delete or rename the EchoSAM segments.")
    raw = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(s.segment_id, raw)
    ext = raw.GetExtent()
    if ext[1] < ext[0] or ext[3] < ext[2] or raw.GetPointData().GetScalars() is None:
        return np.zeros((h, w), bool)
    out = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(raw, ref, out)
    return vnp.vtk_to_numpy(out.GetPointData().GetScalars()).reshape(h, w) > 0


def read_labels(browser, seg_seq, structures: Iterable = ("lv", "myo", "la"), cine: Optional[Cine] = None) -> np.ndarray:
    """The whole segmentation sequence as a ``(T, H, W)`` uint8 label map (structures.py values)."""
    structures = _structures(structures)
    n = browser.GetMasterSequenceNode().GetNumberOfDataNodes()
    _, (h, w) = _reference_image(browser, cine)
    out = np.zeros((n, h, w), np.uint8)
    for t in range(n):
        node = _frame_node(browser, seg_seq, t)
        for s in structures:
            if node.GetSegmentation().GetSegment(s.segment_id) is not None:
                out[t][read_segment_mask(browser, seg_seq, t, s.key, cine)] = s.label
    return out


# ---- prompts from markups -----------------------------------------------------------------------
def _point_label(node, i: int, default: int) -> int:
    whole = (node.GetAttribute(ATTR_PREFIX + "PromptLabel") or "").strip().lower()
    if whole:
        default = 0 if whole in _EXCLUDE_WORDS else 1
    for text in (node.GetNthControlPointDescription(i), node.GetNthControlPointLabel(i)):
        word = (text or "").strip().lower()
        if word in _EXCLUDE_WORDS:
            return 0
        if word in ("include", "positive", "pos", "foreground", "fg", "+", "1", "in"):
            return 1
    return default


def _to_pixel(cine: Cine, ras) -> tuple:
    ijk = np.linalg.inv(cine.ijk_to_ras) @ np.append(np.asarray(ras, float), 1.0)
    return float(ijk[0]), float(ijk[1]), float(ijk[2])


def prompts_from_markups(points, roi, cine: Cine, frame: int, exclude=None) -> list:
    """Markups -> prompts in frame pixel coordinates (x = column, y = row) for ``frame``.

    ``points``: a point list node (or a list of them); each point's label is include (1) unless
    its description/label says ``exclude``/``negative`` or the node has the attribute
    ``EchoSAM.PromptLabel = exclude``. ``exclude``: a second point list whose points are all
    exclude. ``roi``: a `vtkMRMLMarkupsROINode` -> one box (its corners projected on the frame,
    clipped to the image). Returns dicts ``{"type": "point", "frame", "xy", "label"}`` and
    ``{"type": "box", "frame", "box": [x0, y0, x1, y1]}``.
    """
    if not 0 <= int(frame) < cine.n_frames:
        raise PromptError(f"Frame {frame} is outside 0..{cine.n_frames - 1}.")
    h, w = cine.shape[1:]
    groups = [(n, 1) for n in (points if isinstance(points, (list, tuple)) else [points]) if n is not None]
    groups += [(exclude, 0)] if exclude is not None else []
    prompts = []
    for node, default in groups:
        for i in range(node.GetNumberOfControlPoints()):
            p = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(i, p)
            x, y, k = _to_pixel(cine, p)
            name = node.GetNthControlPointLabel(i) or f"{node.GetName()}-{i + 1}"
            if abs(k) > 0.5:
                raise PromptError(f"Point {name} is {abs(k):.1f} slices off the image plane; place it on the image.")
            if not (-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5):
                raise PromptError(f"Point {name} is outside the image ({x:.1f}, {y:.1f}); move it onto the image.")
            prompts.append({"type": "point", "frame": int(frame), "xy": [x, y], "label": _point_label(node, i, default)})
    if roi is not None:
        c, size = [0.0] * 3, [0.0] * 3
        roi.GetCenterWorld(c)
        roi.GetSizeWorld(size)
        axes = []
        for getter in (roi.GetXAxisWorld, roi.GetYAxisWorld, roi.GetZAxisWorld):
            a = [0.0] * 3
            getter(a)
            axes.append(np.asarray(a))
        corners = [np.asarray(c) + sum(sx * 0.5 * sz * ax for sx, sz, ax in zip(signs, size, axes))
                   for signs in np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).T.reshape(-1, 3)]
        xy = np.array([_to_pixel(cine, q)[:2] for q in corners])
        x0, y0 = max(xy[:, 0].min(), 0.0), max(xy[:, 1].min(), 0.0)
        x1, y1 = min(xy[:, 0].max(), w - 1.0), min(xy[:, 1].max(), h - 1.0)
        if x1 <= x0 or y1 <= y0:
            raise PromptError(f"ROI {roi.GetName()!r} does not overlap the image; move it onto the heart.")
        prompts.append({"type": "box", "frame": int(frame), "box": [x0, y0, x1, y1]})
    return prompts


# ---- session state on the sequence node ---------------------------------------------------------
def _state_node(node):
    if node is None or not (node.IsA("vtkMRMLSequenceNode") or node.IsA("vtkMRMLSequenceBrowserNode")):
        raise EchoSAMError("Session state is stored on the input sequence or its browser (attributes of proxy "
                           "nodes are lost on frame change); pass one of those.")
    return node


def save_session_state(node, locked: dict, ed_frames: Sequence[int] = (), es_frames: Sequence[int] = (),
                       prompts: Optional[dict] = None, extra: Optional[dict] = None,
                       written: Optional[dict] = None) -> None:
    """Store locked frames ({structure: [frames]}), ED/ES frames and prompts (JSON) as attributes.

    ``written`` ({frame: {structure: digest}}, see `echosam.slicer_logic.label_digests`) records what
    EchoSAM last wrote into each frame, so a later user edit of a frame can be told apart from it;
    None leaves the stored record as it is.
    """
    node = _state_node(node)
    ed, es = [int(f) for f in ed_frames], [int(f) for f in es_frames]
    values = {"LockedFrames": json.dumps({k: sorted(int(f) for f in v) for k, v in (locked or {}).items()}),
              "EDFrames": json.dumps(ed), "ESFrames": json.dumps(es),
              "EDFrame": str(ed[0]) if ed else "", "ESFrame": str(es[0]) if es else "",
              "Prompts": json.dumps(prompts or {})}
    if written is not None:
        values["WrittenMasks"] = json.dumps({str(int(f)): dict(v) for f, v in written.items()})
    for k, v in (extra or {}).items():
        values[k] = json.dumps(v)
    for key, value in values.items():
        node.SetAttribute(ATTR_PREFIX + key, value)


def load_session_state(node) -> dict:
    """The state `save_session_state` stored: ``{"locked", "ed_frames", "es_frames", "prompts", "written"}``
    (``written`` keyed by int frame)."""
    node = _state_node(node)

    def get(key, default):
        text = node.GetAttribute(ATTR_PREFIX + key)
        try:
            return json.loads(text) if text else default
        except json.JSONDecodeError:
            raise EchoSAMError(f"Attribute {ATTR_PREFIX}{key} of {node.GetName()!r} is damaged; "
                               "re-run segmentation to rebuild it.") from None

    return {"locked": {k: [int(f) for f in v] for k, v in get("LockedFrames", {}).items()},
            "ed_frames": [int(f) for f in get("EDFrames", [])], "es_frames": [int(f) for f in get("ESFrames", [])],
            "prompts": get("Prompts", {}),
            "written": {int(f): dict(v) for f, v in get("WrittenMasks", {}).items()}}


def update_session_state(node, **changes) -> dict:
    """Change some fields of the stored state (``locked``, ``ed_frames``, ``es_frames``, ``prompts``,
    ``written``), keep the others; returns the new state."""
    unknown = set(changes) - {"locked", "ed_frames", "es_frames", "prompts", "written"}
    if unknown:
        raise EchoSAMError(f"Unknown session state field(s): {', '.join(sorted(unknown))}.")
    state = load_session_state(node)
    state.update(changes)
    save_session_state(node, state["locked"], state["ed_frames"], state["es_frames"], state["prompts"],
                       written=state["written"])
    return state


# ---- LV curve, plot and EF table ----------------------------------------------------------------
def _node_by_reference(scene, anchor, role: str, cls: str, name: str):
    node = anchor.GetNodeReference(role) if anchor is not None else None
    if node is None:
        node = scene.AddNewNodeByClass(cls, name)
        if anchor is not None:
            anchor.SetNodeReferenceID(role, node.GetID())
    return node


def _set_columns(table_node, columns: list) -> None:
    table = table_node.GetTable()
    table.Initialize()
    for name, values in columns:
        if values and isinstance(values[0], str):
            arr = vtk.vtkStringArray()
            for v in values:
                arr.InsertNextValue(v)
        else:
            arr = vnp.numpy_to_vtk(np.asarray(values, dtype=float), deep=True)
        arr.SetName(name)
        table.AddColumn(arr)
    table_node.Modified()


def write_lv_curve(scene, frame_times, values, quantity: str = "LV area", unit: str = "mm2",
                   ed_frames: Sequence[int] = (), es_frames: Sequence[int] = (), ef: Optional[float] = None,
                   anchor=None, name: str = "EchoSAM LV") -> dict:
    """The LV area (mm^2) or volume (ml) curve as table + plot series + chart, and an EF table.

    ``anchor`` (the input sequence) keeps node references so a second call updates the same nodes.
    Returns ``{"table", "series", "chart", "ef_table"}``.
    """
    t = np.asarray(frame_times, float)
    v = np.asarray(values, float)
    if t.shape != v.shape or t.ndim != 1:
        raise EchoSAMError(f"{len(t)} frame times for {len(v)} curve values.")
    table = _node_by_reference(scene, anchor, REF_CURVE_TABLE, "vtkMRMLTableNode", f"{name} curve")
    phase = ["ED" if i in set(ed_frames) else "ES" if i in set(es_frames) else "" for i in range(len(v))]
    ycol = f"{quantity} ({unit})"
    _set_columns(table, [("Frame", list(range(len(v)))), ("Time (s)", list(t)), (ycol, list(v)), ("Phase", phase)])
    chart = _node_by_reference(scene, anchor, REF_CURVE_CHART, "vtkMRMLPlotChartNode", f"{name} chart")
    series = chart.GetNthPlotSeriesNode(0) if chart.GetNumberOfPlotSeriesNodes() else None
    if series is None:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {quantity}")
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetXColumnName("Time (s)")
    series.SetYColumnName(ycol)
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
    series.SetColor(0.85, 0.2, 0.2)
    chart.SetTitle(f"{quantity} over the loop")
    chart.SetXAxisTitle("Time (s)")
    chart.SetYAxisTitle(ycol)
    ef_table = _node_by_reference(scene, anchor, REF_EF_TABLE, "vtkMRMLTableNode", f"{name} EF")
    rows = [("ED frames", " ".join(map(str, ed_frames)) or "-"), ("ES frames", " ".join(map(str, es_frames)) or "-")]
    if ed_frames:
        rows.append((f"ED {quantity} ({unit})", f"{np.mean(v[list(ed_frames)]):.2f}"))
    if es_frames:
        rows.append((f"ES {quantity} ({unit})", f"{np.mean(v[list(es_frames)]):.2f}"))
    rows.append(("EF (%)", "-" if ef is None or not np.isfinite(ef) else f"{ef:.1f}"))
    _set_columns(ef_table, [("Quantity", [r[0] for r in rows]), ("Value", [r[1] for r in rows])])
    return {"table": table, "series": series, "chart": chart, "ef_table": ef_table}


def panel_plot_view(scene, chart, tag: str = "EchoSAMPanel"):
    """A plot view node (one per scene, singleton ``tag``) showing ``chart``, for a plot widget embedded
    in the module panel. It has its own layout name, so it never replaces a plot view of the layout."""
    view = scene.GetSingletonNode(tag, "vtkMRMLPlotViewNode")
    if view is None:
        view = slicer.vtkMRMLPlotViewNode()
        view.SetSingletonTag(tag)
        view.SetName(f"{tag} plot view")
        view.SetLayoutName(tag)
        view = scene.AddNode(view)
    view.SetPlotChartNodeID(chart.GetID() if chart is not None else None)
    return view
