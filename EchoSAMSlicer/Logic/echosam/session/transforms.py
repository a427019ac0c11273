"""Cine grid <-> model input grid: the one place coordinates and masks change resolution.

Models see every frame stretched to the square S x S model input (S = ``img_size``); results are
resized back to the cine's (H, W). Pixel centres stay aligned (``align_corners=False`` everywhere):
cine pixel (x = column, y = row) maps to ``((x + 0.5) S / W - 0.5, (y + 0.5) S / H - 0.5)``.
"""
from __future__ import annotations

import numpy as np


class FrameTransform:
    """The resampling between one cine's (H, W) frames and a model's S x S input."""

    def __init__(self, height: int, width: int, img_size: int) -> None:
        self.height, self.width, self.img_size = int(height), int(width), int(img_size)

    def point(self, x: float, y: float) -> tuple:
        """Cine pixel (x=col, y=row) -> model-input pixel coordinates."""
        S = self.img_size
        return ((x + 0.5) * S / self.width - 0.5, (y + 0.5) * S / self.height - 0.5)

    def points(self, points_xy) -> list:
        return [self.point(float(x), float(y)) for x, y in points_xy]

    def box(self, box) -> tuple:
        """(x0, y0, x1, y1) cine pixels -> model-input pixels."""
        x0, y0 = self.point(box[0], box[1])
        x1, y1 = self.point(box[2], box[3])
        return (x0, y0, x1, y1)

    def mask_to_model(self, mask: np.ndarray):
        """(H, W) bool -> (1, 1, S, S) bool tensor (bilinear, then >= 0.5)."""
        import torch
        import torch.nn.functional as F

        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        S = self.img_size
        return F.interpolate(m, size=(S, S), mode="bilinear", align_corners=False) >= 0.5

    def to_frame(self, model_map):
        """(S, S) or (C, S, S) model-resolution tensor -> the same on the cine grid, bilinear, float32."""
        import torch.nn.functional as F

        x = model_map.float()
        x = x[None, None] if x.ndim == 2 else x[None]
        out = F.interpolate(x, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return out[0, 0] if model_map.ndim == 2 else out[0]
