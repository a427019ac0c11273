"""Small real simulator cases for tests: the training distribution, shortened and on a smaller grid."""
from __future__ import annotations

import dataclasses

from training.simulator.scene import sample_params


def small(seed: int, n_frames: int = 8, height: int = 96):
    sp = sample_params(seed)
    probe = dataclasses.replace(sp.probe, n_samples=int(height * 1.45), n_lines=80)
    return dataclasses.replace(sp, n_frames=n_frames, height=height, probe=probe)
