"""Clip augmentations with the same random parameters for every frame (MemSAM ``tf_train``,
reference models.md §1.1): gamma, rotation, scale + random crop, contrast, each with probability
0.5 by default. No flips, noise or elastic deformation (MemSAM uses none; flips would also swap
the apical view's sides).

- gamma: g ~ U(1.0, 2.4), ``I = (I / 255) ** (1 / g) * 255``
- rotation: angle ~ U(-30, 30) degrees about the image centre (zeros outside the field)
- scale: s ~ U(1.0, 1.3), then a random crop back to the original size
- contrast: c ~ U(0.8, 2.0), torchvision's rule ``I = c I + (1 - c) mean(I)``, clipped to 0..255

Geometry is applied with one affine resampling per clip: frames bilinear, masks nearest; frames
without supervision keep their ``IGNORE`` mask. Frames are (T, H, W) float32 0..255, masks (T, H, W)
int64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClipAugment:
    gamma: float = 0.5               # probabilities
    rotate: float = 0.5
    scale: float = 0.5
    contrast: float = 0.5
    gamma_range: tuple = (1.0, 2.4)
    rotate_deg: float = 30.0
    scale_range: tuple = (1.0, 1.3)
    contrast_range: tuple = (0.8, 2.0)
    # extra photometric augmentation for simulated -> real transfer (off by default: MemSAM uses none)
    blur: float = 0.0                # Gaussian blur, sigma ~ U(0.3, blur_sigma) pixels
    noise: float = 0.0               # multiplicative speckle-like noise, std ~ U(0, noise_std)
    gain: float = 0.0                # brightness offset ~ U(-gain_range, gain_range) grey levels
    blur_sigma: float = 1.2
    noise_std: float = 0.25
    gain_range: float = 30.0

    @classmethod
    def from_config(cls, cfg) -> "ClipAugment | None":
        """``augment: false`` or None -> no augmentation; a dict overrides the defaults."""
        if cfg is None or cfg is False:
            return None
        if cfg is True:
            return cls()
        d = dict(cfg)
        for k in ("gamma_range", "scale_range", "contrast_range"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def __call__(self, frames: np.ndarray, masks: np.ndarray, labelled: np.ndarray,
                 rng: np.random.Generator) -> tuple:
        # draw every parameter in a fixed order so a seed always gives the same clip
        u = rng.random(4)
        g = rng.uniform(*self.gamma_range)
        angle = rng.uniform(-self.rotate_deg, self.rotate_deg)
        s = rng.uniform(*self.scale_range)
        crop = rng.random(2)
        c = rng.uniform(*self.contrast_range)
        frames = frames.astype(np.float32, copy=True)
        if u[0] < self.gamma:
            frames = (np.clip(frames, 0, 255) / 255.0) ** (1.0 / g) * 255.0
        angle = angle if u[1] < self.rotate else 0.0
        s = s if u[2] < self.scale else 1.0
        if angle != 0.0 or s != 1.0:
            frames, masks = _affine(frames, masks, labelled, angle, s, crop)
        if u[3] < self.contrast:
            mean = frames.reshape(frames.shape[0], -1).mean(axis=1)[:, None, None]
            frames = np.clip(c * frames + (1.0 - c) * mean, 0, 255)
        if self.blur or self.noise or self.gain:
            frames = self._photometric(frames, rng)
        return frames.astype(np.float32), masks

    def _photometric(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Blur, multiplicative noise (fresh per frame) and a brightness offset; zero stays zero (the
        region outside the fan is black in every cine the engine crops)."""
        from scipy import ndimage

        u = rng.random(3)
        inside = frames > 0
        if u[0] < self.blur:
            sig = rng.uniform(0.3, self.blur_sigma)
            frames = ndimage.gaussian_filter(frames, (0, sig, sig))
        if u[1] < self.noise:
            std = rng.uniform(0.0, self.noise_std)
            frames = frames * np.clip(1.0 + std * rng.standard_normal(frames.shape), 0.0, None)
        if u[2] < self.gain:
            frames = frames + rng.uniform(-self.gain_range, self.gain_range)
        return np.where(inside, np.clip(frames, 0, 255), 0.0).astype(np.float32)


def _affine(frames, masks, labelled, angle_deg: float, scale: float, crop) -> tuple:
    """Rotate about the centre, zoom by ``scale`` and take the crop whose offset is ``crop`` (0..1
    of the free margin); one `grid_sample` per clip."""
    import torch
    import torch.nn.functional as F

    T, H, W = frames.shape
    a = np.deg2rad(angle_deg)
    # output pixel (normalised coords) -> input: zoom in by `scale`, shifted within the margin
    margin = 1.0 - 1.0 / scale
    tx = (2 * crop[0] - 1) * margin
    ty = (2 * crop[1] - 1) * margin
    cos, sin = np.cos(a) / scale, np.sin(a) / scale
    theta = torch.tensor([[cos, -sin * H / W, tx], [sin * W / H, cos, ty]], dtype=torch.float32)
    grid = F.affine_grid(theta[None].expand(T, 2, 3), (T, 1, H, W), align_corners=False)
    f = F.grid_sample(torch.from_numpy(frames)[:, None], grid, mode="bilinear", padding_mode="zeros",
                      align_corners=False)[:, 0].numpy()
    m = torch.from_numpy(masks.astype(np.float32))[:, None]
    m = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].long().numpy()
    out = masks.copy()
    out[labelled] = m[labelled]
    return f, out
