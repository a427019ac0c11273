"""Label maps -> a segmentation sequence synchronised to the input's browser (one segmentation per
frame, same segment IDs / names / colours / terminology everywhere, ``SaveChanges`` on), and the
masks read back from it as the user left them (Segment Editor edits included)."""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support as vnp

from ..cine import Cine
from ..errors import CineError, EchoSAMError, PromptError
from ..structures import Structure, get_structure, parse_structures
from ._common import ijk_to_ras_of, volume_array

REF_SEGMENTATION = "EchoSAM.SegmentationSequence"
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


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
    work = slicer.vtkMRMLSegmentationNode()          # deep-copied into each item, then removed
    scene.AddNode(work)
    try:
        source = _source_volume(browser)
        if source is not None and np.allclose(ijk_to_ras_of(source), cine.ijk_to_ras, atol=1e-6):
            work.SetReferenceImageGeometryParameterFromVolumeNode(source)
        else:
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
    set_reference_volume(browser)
    browser.SetPlaybackActive(was_playing)
    return seg_seq, proxy


def _source_volume(browser):
    """The cine's proxy volume (in the scene): what Segment Editor must use as source volume."""
    seq = browser.GetMasterSequenceNode()
    proxy = browser.GetProxyNode(seq) if seq is not None else None
    return proxy if proxy is not None and proxy.IsA("vtkMRMLScalarVolumeNode") else None


def set_reference_volume(browser) -> None:
    """Make the proxy segmentation's reference geometry the cine's proxy volume (node reference
    ``referenceImageGeometryRef`` set), so Segment Editor offers it as the source volume."""
    seg_seq = find_segmentation_sequence(browser)
    proxy = browser.GetProxyNode(seg_seq) if seg_seq is not None else None
    source = _source_volume(browser)
    if proxy is None or source is None:
        return
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    if proxy.GetNodeReferenceID(role) != source.GetID():
        proxy.SetReferenceImageGeometryParameterFromVolumeNode(source)


def segment_editor_setup(browser, segment_id: str = "LV_endo", tag: str = "EchoSAMSegmentEditor") -> dict:
    """A Segment Editor parameter node (singleton ``tag``) set to edit the current frame: the proxy
    segmentation, the cine's proxy volume as source, ``segment_id`` selected. Returns the nodes
    ``{"editor_node", "segmentation", "source_volume"}`` for `qMRMLSegmentEditorWidget`."""
    seg_seq = find_segmentation_sequence(browser)
    seg = browser.GetProxyNode(seg_seq) if seg_seq is not None else None
    source = _source_volume(browser)
    if seg is None or source is None:
        raise EchoSAMError("There is no EchoSAM segmentation to edit yet: press Segment first.")
    set_reference_volume(browser)
    scene = browser.GetScene()
    node = scene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
    if node is None:
        node = slicer.vtkMRMLSegmentEditorNode()
        node.SetSingletonTag(tag)
        node = scene.AddNode(node)
    node.SetAndObserveSegmentationNode(seg)
    node.SetAndObserveSourceVolumeNode(source)
    if seg.GetSegmentation().GetSegment(segment_id) is not None:
        node.SetSelectedSegmentID(segment_id)
    return {"editor_node": node, "segmentation": seg, "source_volume": source}


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
        cine = Cine.from_array(np.zeros((1,) + volume_array(browser.GetMasterSequenceNode().GetNthDataNode(0)).shape[1:3],
                                        np.uint8), ijk_to_ras=ijk_to_ras_of(browser.GetMasterSequenceNode().GetNthDataNode(0)))
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
