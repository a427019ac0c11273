"""The interactive state over one cine and one model, one owner per concept:

- `store`        the prompt store: points, box or mask per (structure, frame), versions, JSON form
- `transforms`   cine grid <-> model input grid (coordinates, masks, logits)
- `features`     every frame encoded once, cached on the GPU or in host memory
- `results`      per-frame logits, signatures and the composed label map (with undo before-images)
- `propagation`  prompted video models: stale frames and memory rebuilt from the store
- `prompt_free`  clip segmenters over the whole loop, and seeds from their result
- `persistence`  a session folder on disk, through `Session.snapshot` / `Session.restore`
- `session`      `Session`, whose verbs read like SAM 2's video predictor

Modules talk through public names only (tests/test_architecture.py checks it).
"""
from .prompt_free import auto_labels
from .session import DEFAULT_MEMORY_CAP, Session
from .store import FramePrompt, PromptStore, mask_to_rle, rle_to_mask

__all__ = ["Session", "auto_labels", "DEFAULT_MEMORY_CAP", "PromptStore", "FramePrompt", "mask_to_rle",
           "rle_to_mask"]
