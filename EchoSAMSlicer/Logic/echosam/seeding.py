"""Seeding a prompted model from a prompt-free one (``--seed-model``): its labels on the prompt frame
become the prompted model's key-frame masks (not locked).

The prompt-free model always runs on the imaging fan's crop, the field of view it was trained on, and
its labels are kept in full-frame pixels. For a prompt-zoomed MemSAM (`echosam.zoom`) they then give
the zoom its extent, as a box or a mask would, and are cropped to the zoomed region: the seed no longer
leaves such a model the whole fan.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import PromptError


def seed_model_of(prompts, device: str = "auto"):
    """The prompt-free `LoadedModel` named by ``prompts`` (``seed_loaded`` or ``seed_model``); None if none."""
    if prompts.seed_loaded is None and not prompts.seed_model:
        return None
    if prompts.seed_loaded is not None:
        seed = prompts.seed_loaded
    else:
        from .pipeline import load
        seed = load(prompts.seed_model, device)
    if seed.prompted:
        raise PromptError(f"--seed-model {prompts.seed_model} is a prompted model ({seed.family}); a seed model must "
                          "be prompt-free (medivista or masam), e.g. echosam-demo-masam-tiny.")
    return seed


def frame_labels(seed, grey: np.ndarray, frame: int, structures, progress=None, cancel=None) -> np.ndarray:
    """(H, W) labels of ``frame`` from the prompt-free ``seed`` run on the window of frames around it
    (``grey`` (T, H, W) 0..255, the cine the model should see)."""
    from .session.prompt_free import auto_labels, window_around
    from .structures import get_structure

    start, stop = window_around(frame, len(grey), int(getattr(seed.config, "clip_frames", 10)))
    keys = [get_structure(c).key for c in seed.classes if get_structure(c).key in structures]
    return auto_labels(seed, grey[start:stop], keys, progress, cancel)[frame - start]


def seed_for_zoom(prompts, loaded, fan, cine, structures, device: str = "auto") -> Optional[np.ndarray]:
    """Full-frame (H, W) seed labels of the prompt frame when a prompt-zoomed ``loaded`` is seeded (no box,
    points or mask given); None otherwise (the seed, if any, then runs on the session's own crop)."""
    from .cine import grey_0_255
    from .zoom import model_margin

    if prompts.given or not loaded.prompted or model_margin(loaded) is None:
        return None
    seed = seed_model_of(prompts, device)
    if seed is None:
        return None
    if not 0 <= int(prompts.frame) < cine.n_frames:
        raise PromptError(f"Frame {prompts.frame} does not exist: this cine has frames 0..{cine.n_frames - 1}.")
    crop = fan.crop_cine(cine)
    return fan.uncrop(frame_labels(seed, grey_0_255(crop.frames), prompts.frame, structures))


def seed_session(session, prompts, device: str = "auto", seed: Optional[np.ndarray] = None, region=None) -> list:
    """Seed an unprompted ``session`` on ``prompts.frame``: from ``seed`` (full-frame labels of `seed_for_zoom`,
    cropped to ``region``, the session's crop) when given, else from the seed model run on the session's cine.
    A PromptError when there is no seed model either. Returns the structures seeded."""
    if seed is not None:
        return session.seed_from_auto(prompts.frame, auto=region.crop(seed) if region is not None else seed)
    model = seed_model_of(prompts, device)
    if model is None:
        raise PromptError(f"{session.loaded.family} is a prompted model and no prompt was given: add --points, "
                          "--box or --mask, or --seed-model NAME (a prompt-free model) to seed it.")
    return session.seed_from_auto(prompts.frame, auto=model)


__all__ = ["seed_model_of", "frame_labels", "seed_for_zoom", "seed_session"]
