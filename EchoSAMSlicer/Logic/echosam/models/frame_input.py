"""What a model sees of each frame: the frame alone, or the frame with its neighbours in time.

A model whose ``frame_context`` is k > 0 (MemSAM with ``neighbour_channels``: k = 1) takes each frame
t together with frames t-k .. t+k as channels, so the session and the trainer hand it
`neighbour_frames` instead of single frames. Frames beyond the ends of the loop (or of a training
clip) repeat the first or last frame, as a still heart would look.
"""
from __future__ import annotations

import torch


def frame_context(model) -> int:
    """Frames on each side a model wants with each frame (0: the frame alone)."""
    return int(getattr(model, "frame_context", 0) or 0)


def neighbour_frames(frames, start: int, stop: int, context: int) -> torch.Tensor:
    """Frames ``start..stop-1`` of ``frames`` (T, H, W), each with ``context`` neighbours on each side ->
    ``(N, 2 * context + 1, H, W)`` float32, channel ``context`` being the frame itself; ``context`` 0 ->
    ``(N, H, W)`` (the frames as they are)."""
    x = torch.as_tensor(frames, dtype=torch.float32)
    if context <= 0:
        return x[start:stop]
    t = torch.arange(start, stop)[:, None] + torch.arange(-context, context + 1)[None, :]
    return x[t.clamp(0, x.shape[0] - 1)]


def clip_neighbour_frames(frames: torch.Tensor, context: int) -> torch.Tensor:
    """Training clips ``(B, T, H, W)`` -> ``(B * T, 2 * context + 1, H, W)`` (neighbours within each clip),
    or ``(B * T, H, W)`` when ``context`` is 0."""
    b, t = frames.shape[:2]
    if context <= 0:
        return frames.reshape(b * t, *frames.shape[2:])
    return torch.cat([neighbour_frames(clip, 0, t, context) for clip in frames], 0)
