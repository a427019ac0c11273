"""The only bridge between the engine and MRML (Slicer's scene): Sequence, Segmentation, Markups,
Table and Plot nodes in, `Cine` / label maps / prompts out, and back.

Qt-free and app-free: every function takes the nodes (or the scene) as arguments and never reads
``slicer.app``, so the same code runs inside Slicer and headless on the ``slicer-core`` wheel.
``slicer`` and ``vtk`` are imported inside this package only, and only when it is imported
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

Where each concept lives:
- `volumes`: the input node (browser / sequence / proxy / single volume) -> `Cine`.
- `segmentations`: label maps -> the segmentation sequence synchronised with the browser, and the
  (possibly edited) masks read back from it; terminology of the segments.
- `markups`: point lists and ROI -> prompts in frame pixel coordinates, each on the frame it was placed on.
- `state`: session state stored as attributes of the input sequence (and other JSON attributes).
- `plots`: LV curve table, plot series and chart, EF table, the panel's plot view.
- `_common`: attribute prefix and voxel/geometry helpers shared by the modules above.
"""
from __future__ import annotations

from ._common import ATTR_PREFIX
from .markups import (PlacementWatcher, markup_prompts_by_frame, point_frames, prompts_from_markups,
                      stamp_point_frames)
from .plots import REF_CURVE_CHART, REF_CURVE_TABLE, REF_EF_TABLE, panel_plot_view, write_lv_curve
from .segmentations import (ANATOMIC_CONTEXT, REF_SEGMENTATION, TERMINOLOGY_CONTEXT, find_segmentation_sequence,
                            read_labels, read_segment_mask, segment_editor_setup, set_reference_volume,
                            terminology_entry, write_segmentation_sequence)
from .state import (get_json_attribute, load_session_state, save_session_state, set_json_attribute,
                    update_session_state)
from .volumes import cine_from_sequence, cine_from_volume, resolve_input

__all__ = ["ATTR_PREFIX", "REF_SEGMENTATION", "REF_CURVE_TABLE", "REF_CURVE_CHART", "REF_EF_TABLE",
           "TERMINOLOGY_CONTEXT", "ANATOMIC_CONTEXT",
           "resolve_input", "cine_from_sequence", "cine_from_volume",
           "terminology_entry", "find_segmentation_sequence", "write_segmentation_sequence", "read_segment_mask",
           "read_labels", "prompts_from_markups", "markup_prompts_by_frame", "stamp_point_frames", "point_frames",
           "PlacementWatcher", "set_reference_volume", "segment_editor_setup", "save_session_state",
           "load_session_state", "update_session_state", "get_json_attribute", "set_json_attribute",
           "write_lv_curve", "panel_plot_view"]
