"""Size perturbation of the masks MemSAM writes to memory while it trains (``loss.memory_zoom``).

Why: propagated from its own masks, MemSAM's cavity area follows the true area with a slope of about
0.65 (too small at end-diastole, too large at end-systole: EF biased low), even when frame 0 is the
true mask. The hypothesis was that the decoder trusts the memory's mask size: writing each propagated
mask to memory zoomed about its own centroid by a random factor makes that size unreliable, so the
loss on the next frames rewards reading the size from the image. Measured (`sim_memsam_ft18.yaml`):
Dice rose, the EF bias did not move, so the option is kept for experiments, not used by the bundled
model. The outputs (what the loss sees) are never perturbed; inference never uses this.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from echosam.errors import ConfigError


def zoom_about_centroid(logits: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Logits ``(B,1,S,S)`` scaled about each sample's mask centroid by ``factors`` ``(B,)`` (> 1 grows
    the mask). Sampling is bilinear with border padding, so the gradient flows through it; a sample
    with an empty mask is scaled about the image centre."""
    if logits.ndim != 4 or logits.shape[1] != 1 or factors.shape != (logits.shape[0],):
        raise ValueError(f"zoom_about_centroid wants logits (B,1,S,S) and factors (B,); got "
                         f"{tuple(logits.shape)} and {tuple(factors.shape)}.")
    b, _, h, w = logits.shape
    with torch.no_grad():
        p = torch.sigmoid(logits.float())[:, 0]
        ys = torch.linspace(-1, 1, h, device=logits.device)
        xs = torch.linspace(-1, 1, w, device=logits.device)
        total = p.sum((1, 2))
        mass = total.clamp_min(1e-6)
        cy = (p.sum(2) * ys).sum(1) / mass
        cx = (p.sum(1) * xs).sum(1) / mass
        empty = total < 1.0
        cx, cy = torch.where(empty, 0.0, cx), torch.where(empty, 0.0, cy)
        inv = 1.0 / factors.to(logits.device).float()
    # output point x samples the input at c + (x - c) / f
    theta = torch.zeros(b, 2, 3, device=logits.device)
    theta[:, 0, 0], theta[:, 1, 1] = inv, inv
    theta[:, 0, 2], theta[:, 1, 2] = cx * (1 - inv), cy * (1 - inv)
    grid = F.affine_grid(theta, (b, 1, h, w), align_corners=True)
    return F.grid_sample(logits.float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=True).to(logits.dtype)


def memory_zoom_transform(max_zoom: float):
    """``loss.memory_zoom`` -> a `MemSAM.forward` ``memory_mask_transform`` that scales each memory mask
    by a factor uniform in ``[1 - max_zoom, 1 + max_zoom]``, or None when ``max_zoom`` is 0."""
    try:
        z = float(max_zoom)
    except (TypeError, ValueError):
        z = float("nan")
    if not 0.0 <= z < 0.5:
        raise ConfigError(f"loss.memory_zoom must be in [0, 0.5) (the largest relative size change of a memory "
                          f"mask; 0.15 = +-15 %), got {max_zoom}.")
    if z == 0.0:
        return None

    def transform(logits: torch.Tensor) -> torch.Tensor:
        f = 1.0 + (torch.rand(logits.shape[0], device=logits.device) * 2 - 1) * z
        return zoom_about_centroid(logits, f)

    return transform
