"""Sliding-window clip inference for the prompt-free families (any number of frames T >= 1).

A model that sees clips of ``clip`` frames (MA-SAM 5, MediViSTA 10) segments a loop of T frames
window by window; the softmax probabilities of overlapping windows are averaged per frame
(MA-SAM ``test.py``: stride-1 windows, probabilities accumulated into every frame of each window
and averaged). Windows run a few at a time (one batch) and the accumulator lives on the CPU, so
device memory does not grow with T; only the ``(T, C+1, S, S)`` result does.

Padding follows MA-SAM's "replicate the first/last slice" rule:
- ``T < clip``: one window, the loop centred in it, ends filled with copies of the first/last
  frame (so T = 1 works); predictions on the copies are discarded.
- ``pad_ends=True`` (MA-SAM ``test.py``): every frame is also the centre of one window; the loop
  is extended by ``(clip-1)//2`` copies of its first frame and the rest of its last frame.
- ``pad_ends=False`` (default): windows stay inside the loop, the last one aligned to the end;
  for T = clip this is exactly one plain forward of the whole loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import ModelError


@dataclass(frozen=True)
class Window:
    """One clip: ``sources[i]`` is the loop frame at clip position i; ``keep[i]`` is False for
    replicated padding (its prediction is not accumulated)."""

    sources: tuple
    keep: tuple


def plan_windows(frames: int, clip: int, stride: int = 1, pad_ends: bool = False) -> list[Window]:
    """The windows covering ``frames`` loop frames with clips of ``clip`` frames every ``stride``."""
    frames, clip, stride = int(frames), int(clip), int(stride)
    if frames < 1:
        raise ModelError("Cannot segment an empty loop: give at least one frame.")
    if clip < 1 or not 1 <= stride <= clip:
        raise ModelError(f"Window stride must be between 1 and the clip length ({clip}); got {stride}. "
                         "A larger stride would skip frames.")
    if frames < clip:
        left, right = (clip - frames) // 2, clip - frames - (clip - frames) // 2
    elif pad_ends:
        left, right = (clip - 1) // 2, clip - 1 - (clip - 1) // 2
    else:
        left = right = 0
    last_start = frames + left + right - clip            # in padded coordinates
    starts = list(range(0, last_start + 1, stride))
    if starts[-1] != last_start:
        starts.append(last_start)
    windows = []
    for s in starts:
        pos = [s + i - left for i in range(clip)]
        windows.append(Window(tuple(min(max(p, 0), frames - 1) for p in pos), tuple(0 <= p < frames for p in pos)))
    return windows


def sliding_window_probs(run: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, clip: int, stride: int = 1,
                         pad_ends: bool = False, progress: Optional[Callable] = None, cancel=None,
                         device=None, batch: int = 1) -> torch.Tensor:
    """Overlap-averaged softmax probabilities of a clip model over a whole loop.

    ``run(x (B, clip, 3, S, S) on device) -> logits (B, clip, K, S, S)``; ``images (T, 3, S, S)``
    (any device; windows are gathered and moved ``batch`` at a time, so device memory is bounded by
    ``batch`` windows whatever T is). Returns ``(T, K, S, S)`` float32 on the CPU; each frame's
    probabilities sum to 1. ``progress(done, total, message)`` reports frames whose windows are all
    finished; ``cancel.raise_if_cancelled()`` is checked before each batch of windows (an
    `echosam.errors.CancelledError` leaves the model untouched).
    """
    if images.ndim != 4:
        raise ModelError(f"Expected frames as (T, 3, S, S); got shape {tuple(images.shape)}.")
    total = images.shape[0]
    windows = plan_windows(total, clip, stride, pad_ends)
    last_use = [0] * total
    for w, win in enumerate(windows):
        for src, keep in zip(win.sources, win.keep):
            if keep:
                last_use[src] = w
    acc = None
    counts = torch.zeros(total, dtype=torch.float32)
    device = images.device if device is None else torch.device(device)
    batch = max(1, int(batch))
    for first in range(0, len(windows), batch):
        if cancel is not None:
            cancel.raise_if_cancelled()
        group = windows[first:first + batch]
        index = torch.tensor([src for win in group for src in win.sources], dtype=torch.long, device=images.device)
        x = images.index_select(0, index).view(len(group), clip, *images.shape[1:]).to(device)
        logits = run(x)
        if logits.ndim != 5 or logits.shape[:2] != (len(group), clip):
            raise ModelError(f"The clip model returned {tuple(logits.shape)}; expected ({len(group)}, {clip}, K, S, S).")
        probs = torch.softmax(logits.float(), dim=2).cpu()
        if acc is None:
            acc = torch.zeros((total,) + tuple(probs.shape[2:]), dtype=torch.float32)
        for b, win in enumerate(group):
            for i, (src, keep) in enumerate(zip(win.sources, win.keep)):
                if keep:
                    acc[src] += probs[b, i]
                    counts[src] += 1
        del x, logits, probs
        if progress is not None:
            w = first + len(group) - 1
            progress(sum(1 for u in last_use if u <= w), total, f"window {w + 1}/{len(windows)}")
    return acc / counts.view(-1, 1, 1, 1)
