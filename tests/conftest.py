"""Shared pytest fixtures (generic only; module-specific fixtures live in their test files).

- ``rotated_geometry``: a 4x4 IJK-to-RAS with a 30 degree in-plane rotation, LR/AP flips,
  anisotropic spacing (0.3 mm columns, 0.25 mm rows) and a non-zero origin, so geometry bugs show.
- ``small_phantom``: a 12-frame 64x64 phantom (seed 0), built once per session; do not modify it.
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
