"""Small real simulator cases for tests: the training distribution, shortened and on a smaller grid."""
from __future__ import annotations

import dataclasses

from training.simulator.scene import sample_params


def small(seed: int, n_frames: int = 8, height: int = 96):
    sp = sample_params(seed)
    probe = dataclasses.replace(sp.probe, n_samples=int(height * 1.45), n_lines=80)
    return dataclasses.replace(sp, n_frames=n_frames, height=height, probe=probe)


def screen_capture_dicom(folder, seed: int, n_frames: int, height: int, grey_map: str = "grey"):
    """A small simulated loop rendered as a scanner screen capture (the B-mode through ``grey_map``) and written
    as an RGB ultrasound DICOM without a region (the fan must be found from the pixels): (path, screen)."""
    from training.simulator.scene import simulate
    from training.simulator.screen import render_screen, write_dicom

    screen = render_screen(simulate(small(seed, n_frames=n_frames, height=height)), seed=seed, grey_map=grey_map)
    path = folder / ("a4c.dcm" if grey_map == "grey" else f"a4c_{grey_map}.dcm")
    write_dicom(screen, path, with_region=False, seed=seed)
    return path, screen


def deep_loop(seed: int = 4300012, n_frames: int = 12, height: int = 128, depth_mm: float = 215.0):
    """A small simulated loop imaged ``depth_mm`` deep (past the training fans' 120-190 mm): the heart is small in the
    fan, as the prompt-free heart zoom (`echosam.heart_zoom`) expects. Seed 4300012: no training set used it."""
    from training.simulator.scene import simulate

    sp = small(seed, n_frames=n_frames, height=height)
    return simulate(dataclasses.replace(sp, probe=dataclasses.replace(sp.probe, depth=depth_mm)))
