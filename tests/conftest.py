"""Shared pytest fixtures (generic only; module-specific fixtures live in their test files).

- ``rotated_geometry``: a 4x4 IJK-to-RAS with a 30 degree in-plane rotation, LR/AP flips,
  anisotropic spacing (0.3 mm columns, 0.25 mm rows) and a non-zero origin, so geometry bugs show.
- ``small_phantom``: a 12-frame 64x64 phantom (seed 0), built once per session; do not modify it.
- ``end_frame_probs``: ``f(model, images) -> (first, last)``, the softmax of the first and last loop
  frames computed by plain clip forwards (no sliding-window code): what a prompt-free model's
  ``segment_video`` must give there.
"""
from __future__ import annotations

import numpy as np
import pytest


def make_rotated_geometry(col_mm: float = 0.3, row_mm: float = 0.25, angle_deg: float = 30.0,
                          origin=(10.0, 20.0, -5.0)) -> np.ndarray:
    """IJK-to-RAS: rotation about S times diag(-1, -1, 1), column i = col_mm, row j = row_mm, k = 1 mm."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag([-1.0, -1.0, 1.0]) * np.array([col_mm, row_mm, 1.0])[None, :]
    m[:3, 3] = origin
    return m


@pytest.fixture
def rotated_geometry() -> np.ndarray:
    return make_rotated_geometry()


@pytest.fixture(scope="session")
def small_phantom():
    from echosam.phantom import make_phantom

    return make_phantom(n_frames=12, size=(64, 64), seed=0)


def end_frame_probs(model, images):
    """First/last-frame probabilities of a clip model, from plain forwards of the clips that hold them.

    A loop shorter than the clip is one clip, centred, ends filled with copies of the first/last frame;
    otherwise (windows inside the loop, the first at 0, the last aligned to the end) the first frame is
    only in the first clip at position 0 and the last frame only in the last clip at its last position."""
    import torch

    T, clip = images.shape[0], model.config.clip_frames
    with torch.no_grad():
        if T < clip:
            left = (clip - T) // 2
            src = [min(max(i - left, 0), T - 1) for i in range(clip)]
            probs = torch.softmax(model(images[src][None])[0], dim=1)
            return probs[left], probs[left + T - 1]
        first = torch.softmax(model(images[:clip][None])[0, 0], dim=0)
        last = torch.softmax(model(images[T - clip:][None])[0, -1], dim=0)
    return first, last


@pytest.fixture(name="end_frame_probs")
def _end_frame_probs_fixture():
    return end_frame_probs
