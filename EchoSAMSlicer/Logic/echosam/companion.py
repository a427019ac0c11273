"""A second reading for a prompted model: a prompt-free model's probabilities averaged into its own.

Two models that err in different ways err less together. The bundled MemSAM reads the end-diastolic cavity
short and the myocardium thin; the bundled MA-SAM, which needs no prompt, reads the small cavity long. On the
77 selection loops (`val2`, `val2_dark`, `val3`) the two averaged (weight 0.5) took MemSAM's LV Dice from 0.935
to 0.946, its myocardium from 0.819 to 0.838, its LA from 0.903 to 0.919 and its EF MAE from 4.39 to 3.09
points (bias -2.20 to -0.13); held-out numbers are in docs/evaluation.md ("A second reading").

A prompted model asks for it in its config (``companion``: {"model": a Models.json name or file, "weight"});
``echosam segment --no-companion`` or ``companion=False`` runs the prompted model alone.

- **One prompt-free reading per loop** (`FanReading`): the companion segments the fan's crop once, as
  `echosam segment` runs it prompt-free; each session (the prompt zoom, the EF check's three readings) gets
  those probabilities on its own crop (`FanReading.on`) as 8-bit values (`Companion`).
- **Frames read from boxes or points only** (`Companion.applies`): there each structure's probability is
  ``(1 - weight) * own + weight * companion``. A frame propagated from a mask (the user's outline, a
  correction, a seed) is the prompted model's alone: the user's outline says what the structure is, and a
  correction reaches every frame it re-runs in full. Locked frames are the user's mask bit for bit.
- **It never adds a region** (`keep_overlapping`): after blending, a structure keeps only the parts that
  overlap its prompted model's own mask on that frame, so the connected-region rule still holds.
- A companion that cannot load or run is reported and the prompted model runs alone: a second opinion is
  never a reason to fail a run.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np

LEVELS = 255.0      # probabilities are kept as uint8: 1/255 steps, a quarter of the memory of float16


def companion_spec(loaded) -> Optional[dict]:
    """The companion ``loaded`` asks for in its config ({"model", "weight"}), or None."""
    spec = getattr(getattr(loaded, "config", None), "companion", None)
    return dict(spec) if spec else None


def spec_problem(spec) -> Optional[str]:
    """Why ``spec`` is not a usable companion entry (None: it is, or there is none)."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), str) or not spec["model"].strip():
        return f"companion {spec!r} is not {{'model': <name or file>, 'weight': <0..1>}}"
    w = spec.get("weight")
    if type(w) not in (int, float) or not 0.0 < float(w) < 1.0:
        return f"companion weight {w!r} is not a number strictly between 0 and 1"
    return None


@lru_cache(maxsize=2)
def _load(name: str, device: str):
    from .checkpoints import load_model
    return load_model(name, device=device)


class Companion:
    """The companion's probabilities on one session's crop: ``probs`` {structure: (T, h, w) uint8}."""

    def __init__(self, model: str, weight: float, probs: dict) -> None:
        self.model, self.weight, self.probs = str(model), float(weight), dict(probs)

    def applies(self, store, key: str, signature) -> bool:
        """Whether a frame of ``key`` with result ``signature`` (kind, key frame, version) is blended: it was read
        from a key frame whose prompt is a box or points, not a mask."""
        if key not in self.probs or signature is None:
            return False
        entry = store.get(key, int(signature[1]))
        return entry is not None and entry.mask is None

    def blend(self, key: str, t: int, own: np.ndarray) -> np.ndarray:
        """``own`` (h, w) probabilities of frame ``t`` averaged with the companion's."""
        return (1.0 - self.weight) * own + self.weight * (self.probs[key][t].astype(np.float32) / LEVELS)

    def state(self) -> tuple:
        """(JSON-able record, {"companion_<structure>": array}) for a saved session."""
        return {"model": self.model, "weight": self.weight}, {f"companion_{k}": v for k, v in self.probs.items()}

    @classmethod
    def from_state(cls, record: Optional[dict], arrays: dict) -> Optional["Companion"]:
        if not record:
            return None
        probs = {k[len("companion_"):]: np.asarray(v, dtype=np.uint8) for k, v in arrays.items()
                 if k.startswith("companion_")}
        return cls(record["model"], record["weight"], probs)


def keep_overlapping(mask: np.ndarray, own: np.ndarray) -> np.ndarray:
    """The parts (8-connected) of ``mask`` that overlap ``own``: blending may move an outline, never add a region."""
    from scipy import ndimage
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    hit = np.unique(lab[own & mask])
    return np.isin(lab, hit[hit > 0])


class FanReading:
    """A prompt-free model's probabilities over the fan's crop (`read_fan`), for any session's crop (`on`)."""

    def __init__(self, model: str, weight: float, fan, probs: dict) -> None:
        self.model, self.weight, self.fan, self.probs = model, float(weight), fan, probs

    def on(self, region) -> Companion:
        """The `Companion` of a session on ``region`` (the fan itself or a zoom inside it; None: the whole frame)."""
        if region is self.fan:
            return Companion(self.model, self.weight, self.probs)
        full = {k: self.fan.uncrop(p) for k, p in self.probs.items()}
        if region is not None:
            full = {k: region.crop(p) for k, p in full.items()}
        return Companion(self.model, self.weight, full)


def read_fan(loaded, fan, fan_cine, structures, device: str = "cpu", precision: str = "auto",
             notify=None) -> Optional[FanReading]:
    """The companion ``loaded`` (a prompted model) asks for, run on ``fan_cine`` (the cine's crop to ``fan``) for
    ``structures``; None when it asks for none, or when the companion cannot load, lacks a structure or fails
    (``notify`` says so and the prompted model runs alone)."""
    from .cine import grey_0_255
    from .session.prompt_free import frame_probabilities
    from .structures import get_structure

    spec = companion_spec(loaded)
    if spec is None:
        return None
    say = notify or (lambda m: None)
    try:
        other = _load(spec["model"], str(device))
        classes = [get_structure(c).key for c in other.classes]
        missing = [k for k in structures if k not in classes]
        if other.prompted or missing:
            say(f"the companion {spec['model']} cannot read {', '.join(missing) or 'without a prompt'}; "
                "the prompted model runs alone")
            return None
        grey = grey_0_255(fan_cine.frames)
        probs = {k: np.zeros(grey.shape, dtype=np.uint8) for k in structures}
        for t, p in frame_probabilities(other, grey, precision=precision):
            for k in structures:
                probs[k][t] = np.rint(p[classes.index(k) + 1].float().cpu().numpy() * LEVELS).astype(np.uint8)
    except Exception as e:       # a second opinion never fails the run
        say(f"the companion {spec['model']} could not run ({type(e).__name__}: {e}); the prompted model runs alone")
        return None
    say(f"{spec['model']} reads the loop too: its probabilities are averaged into the prompted model's on frames "
        f"read from boxes or points (weight {float(spec['weight']):g}; --no-companion: the prompted model alone)")
    return FanReading(spec["model"], spec["weight"], fan, probs)
