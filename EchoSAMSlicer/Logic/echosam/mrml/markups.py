"""Markups (point lists, ROI) -> prompts in frame pixel coordinates (x = column, y = row), each on the
frame where it was placed.

A control point's frame is stored when it is placed (`stamp_point_frames`, called by the observer
`PlacementWatcher` on ``PointPositionDefinedEvent``) as the JSON
attribute ``EchoSAM.PointFrames`` = ``{control point ID: frame}`` of the markups node (an ROI:
``EchoSAM.PromptFrame``); node attributes are saved with the scene. Scrubbing never moves a prompt.
"""
from __future__ import annotations

import json

import numpy as np
import slicer

from ..cine import Cine
from ..errors import PromptError
from ._common import ATTR_PREFIX

_EXCLUDE_WORDS = {"exclude", "negative", "neg", "background", "bg", "-", "0", "false", "out"}


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


def prompts_from_markups(points, roi, cine: Cine, frame: int, exclude=None, only=None) -> list:
    """Markups -> prompts in frame pixel coordinates (x = column, y = row) for ``frame``.

    ``points``: a point list node (or a list of them); each point's label is include (1) unless
    its description/label says ``exclude``/``negative`` or the node has the attribute
    ``EchoSAM.PromptLabel = exclude``. ``exclude``: a second point list whose points are all
    exclude. ``roi``: a `vtkMRMLMarkupsROINode` -> one box (its corners projected on the frame,
    clipped to the image). ``only``: indices of the control points to use (all by default). Returns dicts ``{"type": "point", "frame", "xy", "label"}`` and
    ``{"type": "box", "frame", "box": [x0, y0, x1, y1]}``.
    """
    if not 0 <= int(frame) < cine.n_frames:
        raise PromptError(f"Frame {frame} is outside 0..{cine.n_frames - 1}.")
    h, w = cine.shape[1:]
    groups = [(n, 1) for n in (points if isinstance(points, (list, tuple)) else [points]) if n is not None]
    groups += [(exclude, 0)] if exclude is not None else []
    prompts = []
    for node, default in groups:
        for i in (range(node.GetNumberOfControlPoints()) if only is None else only):
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


# ---- the frame each control point was placed on ----------------------------------------------------
POINT_FRAMES = ATTR_PREFIX + "PointFrames"
ROI_FRAME = ATTR_PREFIX + "PromptFrame"


def point_frames(node) -> dict:
    """``{control point ID: frame}`` stored on a point list (points without a frame are absent)."""
    try:
        d = json.loads(node.GetAttribute(POINT_FRAMES) or "{}")
    except json.JSONDecodeError:
        d = {}
    return {str(k): int(v) for k, v in d.items()} if isinstance(d, dict) else {}


def stamp_point_frames(node, frame: int) -> dict:
    """Give every control point of ``node`` that has no frame yet the frame ``frame``; drop entries of
    deleted points. Returns the map (an ROI: ``{"roi": frame}``)."""
    if node is None:
        return {}
    if node.IsA("vtkMRMLMarkupsROINode"):
        if node.GetAttribute(ROI_FRAME) in (None, ""):
            node.SetAttribute(ROI_FRAME, str(int(frame)))
        return {"roi": int(node.GetAttribute(ROI_FRAME))}
    old = point_frames(node)
    ids = [node.GetNthControlPointID(i) for i in range(node.GetNumberOfControlPoints())]
    new = {i: old.get(i, int(frame)) for i in ids}
    if new != old:
        node.SetAttribute(POINT_FRAMES, json.dumps(new))
    return new


def roi_frame(roi, default: int) -> int:
    text = roi.GetAttribute(ROI_FRAME) if roi is not None else None
    return int(text) if text not in (None, "") else int(default)


class PlacementWatcher:
    """Observes markups nodes and stamps each newly placed control point with the frame the browser
    shows at that moment (``PointPositionDefinedEvent``). ``watch(nodes)`` replaces the watched set.
    Dragging a point later keeps its frame; to prompt another frame, place a new point there."""

    def __init__(self, browser):
        self.browser = browser
        self._tags: list = []

    def watch(self, nodes) -> None:
        self.close()
        for node in [n for n in nodes if n is not None]:
            tag = node.AddObserver(slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self._on_placed)
            self._tags.append((node, tag))

    def _on_placed(self, node, event) -> None:
        if self.browser is not None:
            stamp_point_frames(node, max(self.browser.GetSelectedItemNumber(), 0))

    def close(self) -> None:
        for node, tag in self._tags:
            node.RemoveObserver(tag)
        self._tags = []


def markup_prompts_by_frame(points, roi, cine: Cine, default_frame: int, exclude=None) -> dict:
    """``{frame: prompts}`` (see `prompts_from_markups`): every point on the frame it was placed on.

    Points placed before any observer watched them get ``default_frame`` now, once (it is stored)."""
    nodes = [n for n in (points if isinstance(points, (list, tuple)) else [points]) if n is not None]
    out: dict = {}
    for node, is_exclude in [(n, False) for n in nodes] + ([(exclude, True)] if exclude is not None else []):
        frames = stamp_point_frames(node, default_frame)
        for f in sorted(set(frames.values())):
            keep = [i for i in range(node.GetNumberOfControlPoints()) if frames[node.GetNthControlPointID(i)] == f]
            got = prompts_from_markups(None if is_exclude else node, None, cine, f,
                                       exclude=node if is_exclude else None, only=keep)
            out.setdefault(f, []).extend(got)
    if roi is not None:
        f = roi_frame(roi, default_frame)
        stamp_point_frames(roi, f)
        out.setdefault(f, []).extend(prompts_from_markups(None, roi, cine, f))
    return out
