"""Session state (locked frames, ED/ES frames, prompts, what EchoSAM last wrote) as JSON attributes
of the input SEQUENCE node (attributes of proxy nodes are lost on frame change); they survive
scene save/reload."""
from __future__ import annotations

import json
from typing import Optional, Sequence

from ..errors import EchoSAMError
from ._common import ATTR_PREFIX


def _state_node(node):
    if node is None or not (node.IsA("vtkMRMLSequenceNode") or node.IsA("vtkMRMLSequenceBrowserNode")):
        raise EchoSAMError("Session state is stored on the input sequence or its browser (attributes of proxy "
                           "nodes are lost on frame change); pass one of those.")
    return node


def save_session_state(node, locked: dict, ed_frames: Sequence[int] = (), es_frames: Sequence[int] = (),
                       prompts: Optional[dict] = None, extra: Optional[dict] = None,
                       written: Optional[dict] = None) -> None:
    """Store locked frames ({structure: [frames]}), ED/ES frames and prompts (JSON) as attributes.

    ``written`` ({frame: {structure: digest}}, see `echosam.slicer.edits.label_digests`) records what
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


def get_json_attribute(node, key: str, default=None):
    """A JSON attribute ``EchoSAM.<key>`` of the sequence/browser node (``default`` when absent)."""
    text = _state_node(node).GetAttribute(ATTR_PREFIX + key)
    try:
        return json.loads(text) if text else default
    except json.JSONDecodeError:
        raise EchoSAMError(f"Attribute {ATTR_PREFIX}{key} of {node.GetName()!r} is damaged; remove it "
                           "(Data module > node > attributes) or re-run segmentation.") from None


def set_json_attribute(node, key: str, value) -> None:
    """Store ``value`` as JSON in ``EchoSAM.<key>``; None removes the attribute."""
    node = _state_node(node)
    if value is None:
        node.RemoveAttribute(ATTR_PREFIX + key)
    else:
        node.SetAttribute(ATTR_PREFIX + key, json.dumps(value))
