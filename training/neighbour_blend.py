"""Blended neighbours while MemSAM trains (``data.neighbour_blend``), as the engine's in-between frames show them.

A model with ``neighbour_channels`` takes frames t-1, t, t+1 as channels. Below its ``substep_fps`` the engine
gives it blends 1/k of the way to the real neighbours instead (`echosam.session.in_between`), while the trainer
gave it the clip's own neighbours, 1 to 3 frames of systole apart. Here, per clip with probability ``p``, the
neighbours are the same blends: k drawn from 2..``max_steps``, each neighbour 1/k of the way from frame t to the
clip frame beside it, rounded to whole grey levels. The other clips keep their real neighbours, so the model
still reads a cine run with one step.
"""
from __future__ import annotations

from typing import Optional

import torch
from echosam.errors import ConfigError


def check_neighbour_blend(cfg, context: int) -> Optional[dict]:
    """``data.neighbour_blend`` ({p, max_steps} or None) validated against the model's frame context."""
    if not cfg:
        return None
    if not isinstance(cfg, dict) or set(cfg) - {"p", "max_steps"}:
        raise ConfigError(f"data.neighbour_blend must be a mapping with keys p and max_steps, got {cfg!r}")
    p, steps = float(cfg.get("p", 0.5)), cfg.get("max_steps", 8)
    if not 0.0 <= p <= 1.0 or isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"data.neighbour_blend needs p in [0, 1] and an integer max_steps >= 2, got {cfg!r}")
    if context <= 0:
        raise ConfigError("data.neighbour_blend blends a frame's neighbour channels, and this model takes one frame "
                          "alone (set model.overrides.neighbour_channels: true, or remove data.neighbour_blend).")
    return {"p": p, "max_steps": steps}


def draw_fractions(n_clips: int, cfg: Optional[dict]) -> torch.Tensor:
    """Per clip, how far towards its neighbours to look: 1 (the clip's own frames) or 1/k, k in 2..max_steps."""
    if not cfg:
        return torch.ones(n_clips)
    k = torch.randint(2, int(cfg["max_steps"]) + 1, (n_clips,)).float()
    blend = torch.rand(n_clips) < float(cfg["p"])
    return torch.where(blend, 1.0 / k, torch.ones(n_clips))


def blended_clip_neighbours(frames: torch.Tensor, context: int, fractions: torch.Tensor) -> torch.Tensor:
    """Clips ``(B, T, H, W)`` grey 0..255 -> ``(B * T, 2 * context + 1, H, W)``: channel ``context + d`` is the
    clip read at time ``t + d * fractions[b]`` (linear between clip frames, rounded to whole grey levels; the
    clip's ends repeat), so fraction 1 gives `echosam.models.frame_input.clip_neighbour_frames` exactly."""
    b, t = frames.shape[:2]
    x = frames.float()
    offsets = torch.arange(-context, context + 1, dtype=torch.float32)
    out = []
    for i in range(b):
        pos = (torch.arange(t, dtype=torch.float32)[:, None] + offsets[None] * float(fractions[i])).clamp(0, t - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=t - 1)
        w = (pos - lo.float())[..., None, None]
        mixed = (1 - w) * x[i][lo] + w * x[i][hi]
        exact = w == 0                      # real frames pass untouched (no rounding of a float input)
        out.append(torch.where(exact, x[i][lo], torch.round(mixed)))
    return torch.cat(out, 0)
