"""The interactive state over one cine and one model, one owner per concept:

- `store`        the prompt store: points, box or mask per (structure, frame), versions, JSON form
- `transforms`   cine grid <-> model input grid (coordinates, masks, logits)
- `features`     every frame encoded once, cached on the GPU or in host memory
- `in_between`   blended in-between frames: as each frame's neighbours, or as memory steps
- `results`      per-frame logits, signatures and the composed label map (with undo before-images)
- `propagation`  prompted video models: stale frames and memory rebuilt from the store
- `prompt_free`  clip segmenters over the whole loop, and seeds from their result
- `persistence`  a session folder on disk, through `Session.snapshot` / `Session.restore`
- `session`      `Session`, whose verbs read like SAM 2's video predictor

Modules talk through public names only (tests/test_architecture.py checks it). Importing the package
or `store` does not import torch (the Slicer panel reads prompt dicts before PyTorch is installed);
`Session`, `auto_labels` and `DEFAULT_MEMORY_CAP` load their modules on first use.
"""
from .store import FramePrompt, PromptStore, mask_to_rle, rle_to_mask

_LAZY = {"Session": "session", "DEFAULT_MEMORY_CAP": "session", "auto_labels": "prompt_free"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["Session", "auto_labels", "DEFAULT_MEMORY_CAP", "PromptStore", "FramePrompt", "mask_to_rle",
           "rle_to_mask"]
