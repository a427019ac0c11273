"""The two kinds of model the engine runs, as `typing.Protocol` s (structural: a model need not
inherit from them; `registry.check_model` verifies a built model against its family's kind).

**PromptedVideoModel** (MemSAM, and SAM through its per-frame adapter): the `echosam.session`
propagator drives it frame by frame. All images are ``(N, 3, S, S)`` from ``prepare_frames``; all
logits are ``(B, 1, S, S)`` at the model input size S = ``img_size``; coordinates are model-input
pixels (x = column, y = row).

- ``prepare_frames(frames (N, H, W) grey 0..255) -> (N, 3, S, S)``
- ``encode(images) -> features``: a per-frame features object with ``len``, ``index(i)`` (keeps
  the leading axis), ``to(device)``, ``type(f).cat([...])`` and ``tensors()`` (name -> tensor, for
  saving); ``feature_type.from_tensors(d)`` rebuilds one.
- ``decode_prompt(features of one frame, points, point_labels, box) -> logits``
- ``init_hidden(n) -> hidden``: the state carried from frame to frame
- ``encode_value(image, features, mask_logits, hidden, deep_update=None) -> (value, hidden)``: what a
  frame and its mask leave in memory; stored with ``bank.add(features.key, features.shrinkage, value)``
  in an `echosam.models.memory.MemoryBank`
- ``segment_from_memory(features, bank, hidden) -> (logits, hidden)``
- ``key_frame_from_memory``: True when a points/box key frame is predicted again from the memory its
  prompt seeded (MemSAM's released loop); False when the prompt's own prediction is the output (SAM).
  Such a model also has ``key_frame_reads(structure) -> int``: how many times that prediction is
  repeated, each from a fresh memory of the last one (1: the released loop).

**ClipSegmenter** (MediViSTA, MA-SAM): prompt-free, over the whole loop.

- ``prepare_frames(frames (N, H, W) grey 0..255) -> (N, 3, S, S)``
- ``segment_video(images, progress=None, cancel=None) -> (T, C+1, S, S)`` class probabilities
  (channel 0 background, channel c = ``config.classes[c-1]``).
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

PROMPTED = "prompted video model"
CLIP = "clip segmenter"


@runtime_checkable
class PromptedVideoModel(Protocol):
    key_frame_from_memory: bool
    feature_type: type

    def prepare_frames(self, frames) -> Any: ...

    def encode(self, images) -> Any: ...

    def decode_prompt(self, feats, points=None, point_labels=None, box=None) -> Any: ...

    def init_hidden(self, n: int = 1) -> Any: ...

    def encode_value(self, image, feats, mask_logits, hidden, deep_update: Optional[bool] = None) -> tuple: ...

    def segment_from_memory(self, feats, bank, hidden) -> tuple: ...


@runtime_checkable
class ClipSegmenter(Protocol):
    def prepare_frames(self, frames) -> Any: ...

    def segment_video(self, images, progress=None, cancel=None) -> Any: ...


PROTOCOLS = {PROMPTED: PromptedVideoModel, CLIP: ClipSegmenter}
